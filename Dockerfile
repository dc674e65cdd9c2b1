# `qwen serve` in a container. The image holds no toolchain: build the per-model executable
# first, on Debian 12 (bookworm) or older so that its glibc is not newer than the image's:
#
#   QWENC_MODEL=models/qwen2.5-0.5b cargo build --release --bin qwen
#   docker build -t qwen-serve:0.1.0 .
#
# The executable opens `<itself>.weights`, so both are copied side by side.
FROM debian:bookworm-slim

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin qwen
COPY target/release/qwen /app/qwen
COPY target/release/qwen.weights /app/qwen.weights

USER 10001
EXPOSE 8080
# SIGTERM starts the drain: new requests get 503, running ones finish (--drain-seconds).
STOPSIGNAL SIGTERM
# The slim image has no curl: bash's /dev/tcp asks /health for its status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/app/qwen"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
