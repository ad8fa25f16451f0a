# The image of the worker, `adaptloop serve` and the CLI: adaptloop and its Python dependencies, no broker (the cluster's
# address and login come from the settings: ADAPTLOOP_BOOTSTRAP, ADAPTLOOP_KAFKA__*). Built by
# `docker build -t adaptloop .`; `docker compose up` runs it with a broker and Prometheus.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 adaptloop \
    && mkdir -p /var/lib/adaptloop && chown adaptloop /var/lib/adaptloop
WORKDIR /opt/adaptloop/src
COPY pyproject.toml setup.py README.md ./
COPY adaptloop adaptloop
COPY schemas schemas
COPY learners learners
COPY snapshots snapshots
COPY streams streams
RUN pip install --no-cache-dir .
# Not the source's folder: the worker starts its roles with `python -m adaptloop`, which imports from the
# working directory first, and the source there is not laid out as the installed package.
WORKDIR /var/lib/adaptloop

USER adaptloop
# Models, keys, the archive and snapshots live here: mount a volume (or set ADAPTLOOP_STORE to s3://...).
ENV ADAPTLOOP_HOME=/var/lib/adaptloop \
    ADAPTLOOP_METRICS_HOST=0.0.0.0
VOLUME ["/var/lib/adaptloop"]
EXPOSE 9464 8000
ENTRYPOINT ["adaptloop"]
CMD ["worker"]
