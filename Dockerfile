# The one image of Conveyor: the operator, every built-in stage pod and the model servers.
#   docker build -t ghcr.io/<you>/conveyor:0.1.0 .          (or: buildah bud -t ... .)
# BASE is any Debian-based image with python3.11 and its venv module, pinned by digest; `make image`
# builds the same file against a base made locally by debootstrap (scripts/image-build.sh).
# Refresh the digest with: skopeo inspect --format '{{.Digest}}' docker://python:3.11-slim-bookworm
ARG BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE} AS deps
# constraints.txt pins the whole runtime closure and the build backend (scripts/image_constraints.py)
ENV PIP_CONSTRAINT=/src/constraints.txt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
COPY constraints.txt ./
# The dependencies, in stages of their own: editing the code reuses their layers. Behind a
# TLS-inspecting proxy, pass its CA bundle (never stored in the image): --secret id=pip-ca,src=FILE
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/conveyor \
 && /opt/conveyor/bin/pip install -q --only-binary=:all: -r constraints.txt

# What the image runs: the dependencies without pip and setuptools, byte-compiled (the root
# filesystem is read-only at run time).
FROM deps AS venv
RUN /opt/conveyor/bin/pip uninstall -q -y pip setuptools \
 && /opt/conveyor/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/conveyor

# The project itself, built with the pinned setuptools and checked against the pins; only its own
# files go to /out (mirroring /opt/conveyor).
FROM deps AS build
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/conveyor/bin/pip install -q --no-deps --no-build-isolation . \
 && /opt/conveyor/bin/pip check \
 && cd /opt/conveyor \
 && /opt/conveyor/bin/python -m compileall -q --invalidation-mode unchecked-hash lib/python3*/site-packages/conveyor \
 && mkdir /out \
 && cp -a --parents bin/conveyor lib/python3*/site-packages/conveyor lib/python3*/site-packages/conveyor_operator-*.dist-info /out/

FROM ${BASE}
LABEL org.opencontainers.image.title="conveyor" \
      org.opencontainers.image.description="Kubernetes-native ML pipelines for scikit-learn" \
      org.opencontainers.image.licenses="Apache-2.0"
# No compilers or build tools here: only the virtualenv built above, then the project's own files.
COPY --from=venv /opt/conveyor /opt/conveyor
COPY --from=build /out/ /opt/conveyor/
ENV PATH=/opt/conveyor/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric non-root user (the restricted Pod Security profile checks runAsNonRoot by UID); any
# other UID works too (OpenShift's restricted SCC picks one): nothing here is owned by 10001.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["conveyor"]
CMD ["--help"]
