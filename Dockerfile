# The one image of Conveyor: the operator, every built-in stage pod and the model servers.
#   docker build -t conveyor:dev .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/conveyor
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/conveyor/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/conveyor/bin/pip install --no-cache-dir . \
 && /opt/conveyor/bin/python -m compileall -q /opt/conveyor

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="conveyor" \
      org.opencontainers.image.description="Kubernetes-native ML pipelines for scikit-learn" \
      org.opencontainers.image.licenses="Apache-2.0"
# No compilers or build tools here: only the virtualenv built above.
COPY --from=build /opt/conveyor /opt/conveyor
ENV PATH=/opt/conveyor/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric non-root user (the restricted Pod Security profile checks runAsNonRoot by UID).
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["conveyor"]
CMD ["--help"]
