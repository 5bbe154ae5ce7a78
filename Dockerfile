# The Dagster webserver and daemon (so the schedule fires) for droughtwatch_assets.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DROUGHTWATCH_DATA_DIR=/opt/dagster/data \
    TF_CPP_MIN_LOG_LEVEL=2

RUN useradd --create-home --uid 1000 dagster \
    && mkdir -p /opt/dagster/app /opt/dagster/home /opt/dagster/data \
    && chown -R 1000:1000 /opt/dagster

WORKDIR /opt/dagster/app
COPY --chown=1000:1000 pyproject.toml README.md workspace.yaml ./
COPY --chown=1000:1000 droughtwatch_assets ./droughtwatch_assets
# The same install steps as the Makefile's; the versions are pinned in pyproject.toml. Editable, as the Makefile's:
# definitions.py loads defs/ as dg loads a project's defs folder, which needs the project's pyproject.toml beside it.
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir --upgrade pip \
    && python -m pip install --no-cache-dir -e .
COPY --chown=1000:1000 dagster.yaml /opt/dagster/home/dagster.yaml

USER 1000
EXPOSE 3000
CMD ["sh", "-c", "dagster-daemon run -w workspace.yaml & exec dagster-webserver -w workspace.yaml -h 0.0.0.0 -p 3000"]
