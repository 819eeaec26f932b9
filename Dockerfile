# The demo workload for compose.yaml: `tinywindow-otel demo` on :8000.
FROM python:3.11.9-slim-bookworm
WORKDIR /src
COPY . .
# [otlp]: the same image serves the scraped app and the pushing one (compose.yaml).
RUN pip install --no-cache-dir ".[otlp]" && rm -rf /src
USER nobody
EXPOSE 8000
CMD ["tinywindow-otel", "demo", "--host", "0.0.0.0", "--port", "8000"]
