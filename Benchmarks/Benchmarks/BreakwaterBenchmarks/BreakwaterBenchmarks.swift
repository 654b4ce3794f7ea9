// Micro-benchmarks of the types every proxied request goes through; see ../../README.md.
//
// Each benchmark does `scalingFactor` (1,000) operations per measured iteration, so the figures
// the tool prints scaled (marked `*`) are per operation. Inputs pass through `identity` and
// results into `blackHole`, so the optimizer can neither hoist the work out of the loop nor
// drop it.
import Benchmark
import NIOCore
import NIOEmbedded
import NIOHTTP1

@testable import Breakwater

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 10_000
    )

    // MARK: 1. Routing

    // Eight routes as a typical app has them, the catch-all last; the request matches the fifth.
    let router = Router(routes: Fixtures.routes)

    Benchmark("routing: match /api/v1/orders/… (5th of 8 routes)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(router.routeIndex(method: HTTPMethod.GET.rawValue, uri: identity("/api/v1/orders/8412?expand=items")))
        }
    }

    Benchmark("routing: fall through to default (8 of 8)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(router.routeIndex(method: HTTPMethod.POST.rawValue, uri: identity("/about/team?ref=nav")))
        }
    }

    // The two halves of a match, to tell them apart.
    Benchmark("routing: Router.path(of:) only (strip the query)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Router.path(of: identity("/api/v1/orders/8412?expand=items")))
        }
    }

    Benchmark("routing: 8 × RouteMatcher.matches on a ready path") { benchmark in
        let path = Router.path(of: "/api/v1/orders/8412?expand=items")
        let matchers = Fixtures.routes.map(\.matcher)
        for _ in benchmark.scaledIterations {
            for matcher in matchers {
                blackHole(matcher.matches(method: HTTPMethod.GET.rawValue, path: identity(path)))
            }
        }
    }

    // MARK: 2. Circuit breaker

    Benchmark("breaker: admit + record success (CircuitBreaker value)") { benchmark in
        var breaker = CircuitBreaker(configuration: BreakerConfig())
        var clock = PolicyInstant(nanoseconds: 1_000_000_000)
        for _ in benchmark.scaledIterations {
            clock.nanoseconds &+= identity(1_000)
            guard case .admitted(let probe) = breaker.admit(now: clock) else { fatalError("breaker opened") }
            blackHole(breaker.record(.success, probe: probe, now: clock))
        }
    }

    // As the data path does it: the route's lock, the state-change check and the metrics.
    let route = Route(configuration: Fixtures.routes[4], proxyLimit: ConcurrencyGate(configuration: ConcurrencyConfig()), metrics: ProxyMetrics())

    Benchmark("breaker: Route.admit + record success (locked, data path)") { benchmark in
        var clock = PolicyInstant(nanoseconds: 1_000_000_000)
        for _ in benchmark.scaledIterations {
            clock.nanoseconds &+= identity(1_000)
            guard case .admitted(let probe) = route.admit(now: clock) else { fatalError("breaker opened") }
            route.record(.success, probe: probe, now: clock)
        }
    }

    // MARK: 3. Concurrency limits

    Benchmark("limiter: acquire + release (ConcurrencyLimiter value)") { benchmark in
        var limiter = ConcurrencyLimiter<Int>(softLimit: 200, hardLimit: 250)
        for _ in benchmark.scaledIterations {
            blackHole(limiter.acquire(identity(1)))
            blackHole(limiter.release())
        }
    }

    Benchmark("limiter: acquire, queue, hand over, release (ConcurrencyLimiter value)") { benchmark in
        // Soft limit 1: the second request waits and gets the first one's slot.
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 2)
        for _ in benchmark.scaledIterations {
            blackHole(limiter.acquire(identity(1)))
            blackHole(limiter.acquire(identity(2)))
            blackHole(limiter.release())
            blackHole(limiter.release())
        }
    }

    let loop = EmbeddedEventLoop()
    let gate = ConcurrencyGate(configuration: ConcurrencyConfig())
    let waiter = ConcurrencyGate.Waiter(eventLoop: loop, wake: {})

    Benchmark("limiter: acquire + release (ConcurrencyGate, locked)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(gate.acquire(identity(waiter)))
            gate.release()
        }
    }

    // MARK: 4. Header rewriting

    let request = Fixtures.browserRequest
    let response = Fixtures.appResponse
    let traceConfiguration = TraceConfig()
    let allocator = ByteBufferAllocator()
    var traceGenerator = IdentifierGenerator(seed: 42)
    let requestFields = MessageFields(request.headers, requestIDHeader: traceConfiguration.requestIDHeader)
    let responseFields = MessageFields(response.headers)
    let requestTrace = RequestTrace(presented: requestFields, configuration: traceConfiguration, generator: &traceGenerator)

    // As `ProxyExchange.forward` builds it: the trace headers are written in the same pass.
    Benchmark("headers: upstreamRequest (browser GET, 12 headers)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(
                HeaderRewriting.upstreamRequest(
                    identity(request),
                    app: .tcp(HostPort(host: "127.0.0.1", port: 8000)),
                    nominated: requestFields.nominated,
                    framing: .noBody,
                    clientAddress: "203.0.113.7",
                    isUpgrade: false,
                    trace: requestTrace,
                    traceConfiguration: traceConfiguration,
                    allocator: allocator
                )
            )
        }
    }

    Benchmark("headers: clientResponse (app 200, 9 headers)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(
                HeaderRewriting.clientResponse(
                    identity(response),
                    fields: responseFields,
                    framing: .contentLength(5_120),
                    clientVersion: .http1_1,
                    keepAlive: true,
                    requestID: (traceConfiguration.requestIDHeader, requestTrace.requestID),
                    allocator: allocator
                )
            )
        }
    }

    // What `ProxyExchange` learns of every request head before it is routed: one pass over
    // its fields, and what is read from that.
    Benchmark("headers: the request's survey (MessageFields: framing, Host, Upgrade, trace)") { benchmark in
        for _ in benchmark.scaledIterations {
            let head = identity(request)
            let fields = MessageFields(head.headers, requestIDHeader: traceConfiguration.requestIDHeader)
            blackHole(MessageFraming(request: fields))
            blackHole(fields.requestsUpgrade)
            blackHole(fields.hasValidHost(version: head.version))
        }
    }

    // MARK: 5. Request ids and trace context

    // The clients' fields as `ProxyExchange` surveys them on arrival.
    let withoutTraceparent = MessageFields(Fixtures.browserRequest.headers, requestIDHeader: traceConfiguration.requestIDHeader)
    var tracedFields = Fixtures.browserRequest.headers.httpHeaders
    tracedFields.add(name: "traceparent", value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    tracedFields.add(name: "tracestate", value: "congo=t61rcWkgMzE")
    let tracedHeaders = HeaderFields(tracedFields)
    let withTraceparent = MessageFields(tracedHeaders, requestIDHeader: traceConfiguration.requestIDHeader)

    Benchmark("trace: new request id + traceparent (none incoming)") { benchmark in
        var generator = IdentifierGenerator(seed: 42)
        for _ in benchmark.scaledIterations {
            blackHole(RequestTrace(presented: identity(withoutTraceparent), configuration: traceConfiguration, generator: &generator))
        }
    }

    Benchmark("trace: new request id, incoming traceparent kept") { benchmark in
        var generator = IdentifierGenerator(seed: 42)
        for _ in benchmark.scaledIterations {
            blackHole(RequestTrace(presented: identity(withTraceparent), configuration: traceConfiguration, generator: &generator))
        }
    }

    Benchmark("trace: request id only (newRequestID)") { benchmark in
        var generator = IdentifierGenerator(seed: 42)
        for _ in benchmark.scaledIterations {
            blackHole(RequestTrace.newRequestID(using: &generator))
        }
    }
}

enum Fixtures {
    static func route(_ name: String, _ match: PathMatch, methods: Set<String>? = nil) -> RouteConfig {
        RouteConfig(name: name, match: match, methods: methods, policy: RoutePolicy())
    }

    static let routes: [RouteConfig] = [
        route("health", .exact("/healthz"), methods: ["GET", "HEAD"]),
        route("login", .exact("/auth/login"), methods: ["POST"]),
        route("static", .prefix("/static/"), methods: ["GET", "HEAD"]),
        route("users", .prefix("/api/v1/users")),
        route("orders", .prefix("/api/v1/orders")),
        route("uploads", .prefix("/api/v1/uploads"), methods: ["POST", "PUT"]),
        route("websocket", .exact("/ws")),
        route("default", .any),
    ]

    /// What Chrome sends for a navigation, cookie included.
    static let browserRequest = RequestHead(
        version: .http1_1,
        method: .GET,
        uri: "/api/v1/orders/8412?expand=items",
        headers: [
            "Host": "shop.example.com",
            "Connection": "keep-alive",
            "Cache-Control": "max-age=0",
            "Upgrade-Insecure-Requests": "1",
            "User-Agent":
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
            "Accept":
                "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8",
            "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
            "Referer": "https://shop.example.com/api/v1/orders",
            "Accept-Encoding": "gzip, deflate, br, zstd",
            "Accept-Language": "en-GB,en;q=0.9,de;q=0.8",
        ]
    )

    static let appResponse = ResponseHead(
        version: .http1_1,
        status: .ok,
        headers: [
            "Date": "Tue, 02 Jul 2024 10:15:42 GMT",
            "Server": "uvicorn",
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": "5120",
            "Cache-Control": "private, max-age=0",
            "ETag": "\"5c1-18a7f\"",
            "Vary": "Accept-Encoding",
            "Set-Cookie": "session=3f9a2c; Path=/; HttpOnly; SameSite=Lax",
            "Connection": "keep-alive",
        ]
    )
}
