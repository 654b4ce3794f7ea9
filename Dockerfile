# syntax=docker/dockerfile:1
# Build: a release binary with the Swift standard library linked in statically.
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
# The same build as bench/release-build.sh's: link-time optimised across all modules.
RUN swift build -c release --product breakwater --static-swift-stdlib --experimental-lto-mode=full \
 && install -D "$(swift build -c release --show-bin-path)/breakwater" /out/breakwater

# Run: a slim image, an unprivileged user, nothing but the binary and its configuration.
FROM debian:bookworm-slim
RUN useradd --system --no-create-home --uid 10001 breakwater
COPY --from=build /out/breakwater /usr/local/bin/breakwater
COPY proxy.conf.example /etc/breakwater/proxy.conf
USER breakwater
ENV BREAKWATER_CONFIG=/etc/breakwater/proxy.conf
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/breakwater"]
