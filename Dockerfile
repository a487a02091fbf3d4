# syntax=docker/dockerfile:1
# gowa: a static, CGO-free binary on a minimal, non-root image.
#
#   docker build -t gowa .
#   docker run -p 3000:3000 -v gowa-storages:/app/storages -e APP_BASIC_AUTH="admin:secret123" gowa rest

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Keep these flags in step with `make build` and cmd/whatsapp's static-binary test.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/whatsapp ./cmd/whatsapp \
 && mkdir -p /out/storages /out/storages-sandbox

FROM gcr.io/distroless/static-debian12:nonroot
WORKDIR /app
COPY --from=build /out/whatsapp /app/whatsapp
COPY --from=build --chown=65532:65532 --chmod=0700 /out/storages /app/storages
# `whatsapp sandbox` keeps its simulated world apart, in ./storages-sandbox.
COPY --from=build --chown=65532:65532 --chmod=0700 /out/storages-sandbox /app/storages-sandbox
USER 65532:65532
# The working directory makes ./storages /app/storages; APP_STORAGES is left
# unset so that the sandbox keeps to its own folder.
ENV APP_PORT=3000
VOLUME ["/app/storages"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/app/whatsapp", "healthcheck"]
ENTRYPOINT ["/app/whatsapp"]
CMD ["rest"]
