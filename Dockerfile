# The demo workload for compose.yaml: `tinywindow-otel demo` on :8000.
FROM python:3.11.9-slim-bookworm
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . && rm -rf /src
USER nobody
EXPOSE 8000
CMD ["tinywindow-otel", "demo", "--host", "0.0.0.0", "--port", "8000"]
