# The one image of every Pledgeflow process (API, processor, projector, audit CLI):
# `pledgeflow <group> <command>` is the container's arguments (see deploy/k8s/base).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# Dependencies only from the hash-locked requirements.lock (`make lock`): a changed or
# substituted package fails the build.
COPY pyproject.toml README.md requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY schemas ./schemas
COPY services ./services
RUN pip install --no-deps . && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin pledgeflow
USER 10001
ENTRYPOINT ["pledgeflow"]
