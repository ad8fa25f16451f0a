# The image of the worker, `adaptloop serve` and the CLI: adaptloop and its Python dependencies, no broker (the cluster's
# address and login come from the settings: ADAPTLOOP_BOOTSTRAP, ADAPTLOOP_KAFKA__*). Built by
# `docker build -t adaptloop .`; `docker compose up` runs it with a broker and Prometheus.

# The toolchain of the compiled core (core/, Rust): only the build stage uses it.
FROM rust:1-slim-bookworm AS rust

# The build stage: adaptloop's wheel, its core compiled (a C linker for it, the Rust toolchain from above).
FROM python:3.11-slim AS build
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev
WORKDIR /opt/adaptloop/src
COPY pyproject.toml setup.py README.md MANIFEST.in ./
COPY core core
COPY adaptloop adaptloop
COPY schemas schemas
COPY learners learners
COPY snapshots snapshots
COPY streams streams
RUN PATH=/usr/local/cargo/bin:$PATH pip wheel --no-cache-dir --no-deps --wheel-dir /opt/adaptloop/wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 adaptloop \
    && mkdir -p /var/lib/adaptloop && chown adaptloop /var/lib/adaptloop
COPY --from=build /opt/adaptloop/wheels /opt/adaptloop/wheels
RUN pip install --no-cache-dir /opt/adaptloop/wheels/adaptloop-*.whl && rm -rf /opt/adaptloop/wheels
# Not the source's folder: the worker starts its roles with `python -m adaptloop`, which imports from the
# working directory first.
WORKDIR /var/lib/adaptloop

USER adaptloop
# Models, keys, the archive and snapshots live here: mount a volume (or set ADAPTLOOP_STORE to s3://...).
ENV ADAPTLOOP_HOME=/var/lib/adaptloop \
    ADAPTLOOP_METRICS_HOST=0.0.0.0
VOLUME ["/var/lib/adaptloop"]
EXPOSE 9464 8000
ENTRYPOINT ["adaptloop"]
CMD ["worker"]
