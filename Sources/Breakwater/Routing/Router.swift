/// Picks the route for a request: the first `[[route]]` in file order whose path and method
/// match, else the implicit route `default`, which the configuration always puts last.
///
/// Plain values and no NIO: the data path asks, the router answers, and tests need no sockets.
public struct Router: Sendable {
    public let routes: [RouteConfig]

    /// - Precondition: the last route matches everything (the configuration guarantees it).
    public init(routes: [RouteConfig]) {
        precondition(routes.last?.match == .any, "the last route must be the catch-all default")
        self.routes = routes
    }

    /// The index of the route for `method` and the request target `uri`.
    public func routeIndex(method: String, uri: String) -> Int {
        let path = Self.path(of: uri)
        for (index, route) in self.routes.enumerated() where route.matches(method: method, path: path) {
            return index
        }
        return self.routes.count - 1
    }

    /// The path of a request target: origin-form (`/a/b?q`) or absolute-form
    /// (`http://host/a/b?q`), without the query, so `?` cannot smuggle a request onto a route.
    static func path(of uri: String) -> Substring {
        var target = Substring(uri)
        if !target.hasPrefix("/"), let scheme = target.firstRange(of: "://") {
            let afterAuthority = target[scheme.upperBound...]
            target = afterAuthority.firstIndex(of: "/").map { afterAuthority[$0...] } ?? "/"
        }
        if let query = target.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            target = target[..<query]
        }
        return target
    }
}

extension RouteConfig {
    func matches(method: String, path: Substring) -> Bool {
        if let methods, !methods.contains(method) {
            return false
        }
        switch self.match {
        case .any: return true
        case .exact(let exact): return path == exact
        case .prefix(let prefix): return path.hasPrefix(prefix)
        }
    }
}
