"""Where artifacts live: versioned local folders and content-addressed S3, published models (the registry),
retention, and the S3 client with errors that name the endpoint and bucket. May import `data`, `records`, `core`."""
