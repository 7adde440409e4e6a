# The image the Helm chart runs: `docker build -t tunegate .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY registry ./registry
COPY proxy ./proxy
COPY tunegate ./tunegate
RUN pip install --no-cache-dir .
# tiktoken's encoding files make token counts exact with no network at run time: put cl100k_base and
# o200k_base (as tiktoken caches them) in ./tiktoken_cache before building, or mount them at this path.
ENV TIKTOKEN_CACHE_DIR=/opt/tiktoken_cache
EXPOSE 8000
ENTRYPOINT ["tunegate"]
CMD ["serve", "--config", "/etc/tunegate/tunegate.yaml"]
