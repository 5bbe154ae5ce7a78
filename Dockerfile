# The Dagster webserver and daemon (so the schedule fires) for droughtwatch_assets.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DROUGHTWATCH_DATA_DIR=/opt/dagster/data \
    TF_CPP_MIN_LOG_LEVEL=2

RUN useradd --create-home --uid 1000 dagster \
    && mkdir -p /opt/dagster/app /opt/dagster/home /opt/dagster/data \
    && chown -R dagster:dagster /opt/dagster

WORKDIR /opt/dagster/app
COPY --chown=dagster:dagster pyproject.toml README.md workspace.yaml ./
COPY --chown=dagster:dagster droughtwatch_assets ./droughtwatch_assets
RUN python -m pip install --no-cache-dir --upgrade pip \
    && python -m pip install --no-cache-dir .
COPY --chown=dagster:dagster dagster.yaml /opt/dagster/home/dagster.yaml

USER dagster
EXPOSE 3000
# dagster dev runs the webserver and the daemon together.
CMD ["dagster", "dev", "-w", "workspace.yaml", "-h", "0.0.0.0", "-p", "3000"]
