@testable import Breakwater
import Testing

@Suite struct RouterTests {
    private func route(_ name: String, _ match: PathMatch, methods: Set<String>? = nil) -> RouteConfig {
        RouteConfig(name: name, match: match, methods: methods, policy: RoutePolicy())
    }

    private var router: Router {
        Router(routes: [
            self.route("webhooks", .prefix("/api/v1/webhooks/"), methods: ["POST"]),
            self.route("health", .exact("/health")),
            self.route("api", .prefix("/api/")),
            self.route("default", .any),
        ])
    }

    private func name(_ method: String, _ uri: String) -> String {
        self.router.routes[self.router.routeIndex(method: method, uri: uri)].name
    }

    @Test func firstMatchInFileOrderWins() {
        #expect(self.name("POST", "/api/v1/webhooks/stripe") == "webhooks")
        #expect(self.name("GET", "/api/v1/webhooks/stripe") == "api")
        #expect(self.name("GET", "/api/users") == "api")
    }

    @Test func exactPathsMatchOnlyThemselves() {
        #expect(self.name("GET", "/health") == "health")
        #expect(self.name("GET", "/health/deep") == "default")
        #expect(self.name("GET", "/healthz") == "default")
    }

    @Test func theQueryDoesNotTakePartInMatching() {
        #expect(self.name("GET", "/health?verbose=1") == "health")
        #expect(self.name("GET", "/other?next=/api/") == "default")
    }

    @Test func absoluteFormTargetsMatchOnTheirPath() {
        #expect(self.name("GET", "http://example.com/api/x") == "api")
        #expect(self.name("GET", "http://example.com") == "default")
    }

    /// The authority ends at `?` or `#` as well as `/`: what follows is the app's query, not a
    /// path a client could use to take another route's slots and breaker.
    @Test func anAbsoluteFormTargetRoutesByThePathTheAppReceives() {
        for uri in ["http://a?x=/api/v1/webhooks/", "http://a#/api/x", "http://user@a?/health"] {
            let sent = HeaderRewriting.absoluteForm(uri)?.target
            #expect(Router.path(of: uri) == "/", "\(uri)")
            #expect(sent.map { Router.path(of: $0) } == "/", "\(uri)")
            #expect(self.name("POST", uri) == "default", "\(uri)")
        }
        #expect(self.name("GET", "http://a/api/x?y=/health") == "api")
    }

    /// uvicorn percent-decodes the path before the app routes on it, so the proxy matches the
    /// decoded path too: an encoded slash or letter cannot take a request to the webhooks
    /// handler under another route's limits, breaker and fallback.
    @Test func routesMatchThePathAsTheAppDecodesIt() {
        #expect(self.name("POST", "/api/v1%2Fwebhooks/stripe") == "webhooks")
        #expect(self.name("POST", "/api/v1/%77ebhooks/stripe") == "webhooks")
        #expect(self.name("POST", "/api/v1/%57ebhooks/stripe") == "api", "%57 is W, another path")
        #expect(self.name("GET", "/%68ealth") == "health")
        #expect(self.name("GET", "/health%3Fverbose") == "default", "an encoded ? is part of the path")
        // What is not an escape stays as sent, as Python's unquote leaves it.
        #expect(Router.percentDecoded("/a%zz/%4") == "/a%zz/%4")
        #expect(Router.percentDecoded("/caf%C3%A9%FF") == "/café\u{FFFD}")
    }

    /// A route's path written encoded in the file (the only way to write a space there) is
    /// decoded too, and matches however the client encodes the same path.
    @Test func aPathWrittenEncodedMatchesTheSamePathAnyhowEncoded() {
        let router = Router(routes: [self.route("docs", .prefix("/files/my%20docs/")), self.route("default", .any)])
        for uri in ["/files/my%20docs/a", "/files/my%20%64ocs/a"] {
            #expect(router.routes[router.routeIndex(method: "GET", uri: uri)].name == "docs", "\(uri)")
        }
        #expect(router.routes[router.routeIndex(method: "GET", uri: "/files/my%2520docs/a")].name == "default")
    }

    @Test func whatMatchesNothingTakesTheDefaultRoute() {
        #expect(self.name("DELETE", "/") == "default")
        #expect(self.name("GET", "*") == "default")
    }
}
