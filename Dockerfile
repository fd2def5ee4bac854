# The Tulle image: `tulle control` (and, later, `tulle proxy`) for Kubernetes.
# Build it yourself: docker build -t tulle:dev .   (nothing here pulls or pushes images)
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The injected tulle-init container writes packet rules (both backends).
RUN apt-get update && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
# The uid the install manifests run as (runAsNonRoot, read-only root filesystem).
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["tulle"]
CMD ["control", "--source", "kubernetes"]
