# metaetcd proxy image.
#
#   docker build -t metaetcd .
#   docker run --rm -p 2379:2379 -p 9090:9090 metaetcd \
#     --coordinator https://coord:2379 --members 'https://m0:2379,https://m1:2379' \
#     --listen-addr 0.0.0.0:2379 --metrics-addr 0.0.0.0 ...
#
# The image holds only bin/, dist/ and the production dependencies (package.json
# "files"). The proxy needs no etcd binaries; `metaetcd sandbox` does and is not
# meant to run from this image.

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No scripts here: "prepare" runs tsc, which needs the sources copied below.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# The production dependencies need no install scripts, and "prepare" (tsc) must not run.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY bin ./bin
USER node
# 2379: the etcd API (--listen-addr); 9090: /metrics, /health and /readyz (--metrics-port).
EXPOSE 2379 9090
ENTRYPOINT ["node", "/app/bin/metaetcd.js"]
