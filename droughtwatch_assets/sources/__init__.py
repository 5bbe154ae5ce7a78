"""Where raw shards come from: the sample, a folder, the benchmark archive or an S3 prefix; listing them
without reading them; the archive download. May import `storage` (its S3 client), `data`, `records`, `core`."""
