#!/usr/bin/env bash
# Rebuilds the GraphiQL assets bankgraph serves from its binary: production builds of React,
# ReactDOM and GraphiQL at pinned versions, from the npm registry (npm checks each package's
# integrity), gzipped deterministically. Then compare with SHA256SUMS, or update it on purpose.
set -euo pipefail
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent graphiql@3.8.3 react@18.3.1 react-dom@18.3.1 >/dev/null)
for p in graphiql-3.8.3 react-18.3.1 react-dom-18.3.1; do mkdir -p "$work/$p" && tar xzf "$work/$p.tgz" -C "$work/$p"; done
cp "$work/react-18.3.1/package/umd/react.production.min.js" \
   "$work/react-dom-18.3.1/package/umd/react-dom.production.min.js" \
   "$work/graphiql-3.8.3/package/graphiql.min.js" \
   "$work/graphiql-3.8.3/package/graphiql.min.css" .
rm -f ./*.gz && gzip -9 -n ./*.js ./*.css
sha256sum -c SHA256SUMS
