# syntax=docker/dockerfile:1
# The proxy's container image: compiled in a build stage with dev dependencies, run on
# distroless Node.js 24 LTS with production dependencies only, as a numeric non-root user.
#
# The tags below move as Debian and Node publish fixes. For a reproducible image, pin each by
# digest: `docker buildx imagetools inspect node:24-bookworm-slim` (and the distroless one)
# prints it; write it as `node:24-bookworm-slim@sha256:<digest>`.
#
#   docker build -t vonage-media-proxy:0.1.0 .
#   # The process runs as uid 65532: a key readable only by you fails at start-up with exit 78,
#   # "VONAGE_PRIVATE_KEY_PATH cannot be read (EACCES: /run/secrets/key)". Hand it over first:
#   sudo chown 65532:65532 private.key && sudo chmod 0400 private.key
#   docker run -d --name media-proxy --read-only -e VONAGE_APPLICATION_ID=... \
#     -e VONAGE_PRIVATE_KEY_PATH=/run/secrets/key -v "$PWD/private.key:/run/secrets/key:ro" \
#     -p 127.0.0.1:8081:8081 vonage-media-proxy:0.1.0
#   # The media port listens on the container's loopback only (HOST below): your service joins
#   # the proxy's network namespace and calls localhost:8080.
#   docker run --rm --network container:media-proxy curlimages/curl:8.11.1 \
#     -sS -o /dev/null -w '%{http_code}\n' http://localhost:8080/media/<id>

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: the image's own Node 24 compiles. (The `node` dev dependency, which brings
# Node 24 to machines whose own Node is older, would only download a second copy here.)
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# A separate install, so no dev dependency (typescript, tsx, biome) reaches the runtime image.
FROM node:24-bookworm-slim AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# Distroless has no shell, package manager or curl. Its entrypoint is node itself.
FROM gcr.io/distroless/nodejs24-debian12:nonroot
WORKDIR /app
# MALLOC_TRIM_THRESHOLD_: glibc otherwise hands freed heap back to the kernel whenever 128 KiB
# sit free at its top, and takes it back (page faults) on the next socket reads. Every garbage
# collection frees megabytes of 64 KiB read buffers at once, and large downloads then cost up to
# 1.5x the CPU, in 5 of 8 processes tried (README, Performance). 32 MiB stops the churn.
# HOST: the media port stays on loopback, for the containers that share this one's network
# namespace (a pod's app container, a compose service with network_mode "service:..."), and
# nobody else. ADMIN_HOST: the admin port (metrics, probes; never media) on every interface, so
# that the kubelet's probes and Prometheus reach it.
ENV NODE_ENV=production \
    HOST=127.0.0.1 \
    ADMIN_HOST=0.0.0.0 \
    MALLOC_TRIM_THRESHOLD_=33554432
# Everything is owned by root and only readable by the runtime user: the process writes
# nothing at run time (logs go to stdout), so a read-only root filesystem works.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
# 65532 is distroless's "nonroot"; numeric so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8080 media (loopback only), 8081 admin (metrics, /healthz, /readyz, /quitquitquit).
EXPOSE 8080 8081
# No HEALTHCHECK: the image has no shell or curl, and Kubernetes ignores HEALTHCHECK anyway
# (its probes call /healthz and /readyz on 8081). docker-compose.yml defines a health check
# that runs node itself.
CMD ["/app/dist/main.js"]
