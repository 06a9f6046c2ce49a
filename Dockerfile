# The one image of every Pledgeflow process (API, processor, projector, audit CLI):
# `pledgeflow <group> <command>` is the container's arguments (see deploy/k8s/base).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY services ./services
RUN pip install . && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin pledgeflow
USER 10001
ENTRYPOINT ["pledgeflow"]
