/// Picks the route for a request: the first `[[route]]` in file order whose path and method
/// match, else the implicit route `default`, which the configuration always puts last.
///
/// Plain values and no NIO: the data path asks, the router answers, and tests need no sockets.
public struct Router: Sendable {
    public let routes: [RouteConfig]
    /// What matching reads of each route, kept apart: a `RouteConfig` read out of `routes` is
    /// copied, every string and set in it retained and released, route after route.
    private let matchers: [RouteMatcher]

    /// - Precondition: the last route matches everything (the configuration guarantees it).
    public init(routes: [RouteConfig]) {
        precondition(routes.last?.match == .any, "the last route must be the catch-all default")
        self.routes = routes
        self.matchers = routes.map(\.matcher)
    }

    /// The index of the route for `method` and the request target `uri`.
    public func routeIndex(method: String, uri: String) -> Int {
        let path = Self.percentDecoded(Self.path(of: uri))
        for index in self.matchers.indices where self.matchers[index].matches(method: method, path: path) {
            return index
        }
        return self.routes.count - 1
    }

    /// The path of a request target: origin-form (`/a/b?q`) or absolute-form
    /// (`http://host/a/b?q`), without the query, so `?` cannot smuggle a request onto a route.
    /// An absolute-form target is read as the app will receive it (`HeaderRewriting.absoluteForm`),
    /// so the route that limits a request is the one whose path the app serves.
    static func path(of uri: String) -> Substring {
        var target = Substring(uri)
        if target.utf8.first != UInt8(ascii: "/"), let absolute = HeaderRewriting.absoluteForm(uri) {
            target = Substring(absolute.target)
        }
        // Bytes, not Characters: a target is ASCII on the wire, and the delimiters are ASCII, so
        // the index is a valid boundary and no grapheme breaking is paid for per request.
        // Scanned in place: walking the `UTF8View` index by index costs several times as much.
        let isQueryStart = { (byte: UInt8) in byte == UInt8(ascii: "?") || byte == UInt8(ascii: "#") }
        let queryOffset = target.utf8.withContiguousStorageIfAvailable { $0.firstIndex(where: isQueryStart) }
            ?? target.utf8.firstIndex(where: isQueryStart).map { target.utf8.distance(from: target.utf8.startIndex, to: $0) }
        if let queryOffset {
            target = target[..<target.utf8.index(target.utf8.startIndex, offsetBy: queryOffset)]
        }
        return target
    }

    /// A path as the app reads it: uvicorn percent-decodes the path it hands to the app
    /// (`urllib.parse.unquote`: `%XX` becomes its byte, a `%` without two hex digits stays, bytes
    /// that are not UTF-8 become U+FFFD), and Starlette routes on that. Matched as sent,
    /// `/api/v1%2Fwebhooks/x` or `/api/v1/%77ebhooks/x` would reach the webhooks handler under
    /// another route's limits, breaker and fallback.
    static func percentDecoded(_ path: Substring) -> Substring {
        guard path.utf8.contains(UInt8(ascii: "%")) else { return path }
        let sent = Array(path.utf8)
        var decoded: [UInt8] = []
        decoded.reserveCapacity(sent.count)
        var index = 0
        while index < sent.count {
            if sent[index] == UInt8(ascii: "%"), index + 2 < sent.count,
               let high = hexValue(sent[index + 1]), let low = hexValue(sent[index + 2]) {
                decoded.append(high << 4 | low)
                index += 3
            } else {
                decoded.append(sent[index])
                index += 1
            }
        }
        return Substring(String(decoding: decoded, as: UTF8.self))
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// What a route matches on: its path and, when it lists them, its methods.
struct RouteMatcher: Sendable {
    let match: PathMatch
    let methods: Set<String>?

    func matches(method: String, path: Substring) -> Bool {
        if let methods, !methods.contains(method) {
            return false
        }
        switch self.match {
        case .any: return true
        // Byte for byte, as HAProxy and Envoy compare paths: `String`'s `==` and `hasPrefix`
        // would also equate canonically equivalent Unicode, which no client means.
        case .exact(let exact): return path.utf8.count == exact.utf8.count && path.hasBytePrefix(exact)
        case .prefix(let prefix): return path.hasBytePrefix(prefix)
        }
    }
}

extension RouteMatcher {
    /// Whether this route, placed earlier, takes every request `later` would match: then
    /// `later` can never match, which is a mistake in the file (`/api/` before
    /// `/api/v1/webhooks/`), not a choice.
    func shadows(_ later: RouteMatcher) -> Bool {
        if let methods = self.methods {
            guard let laterMethods = later.methods, laterMethods.isSubset(of: methods) else { return false }
        }
        switch (self.match, later.match) {
        case (.any, _): return true
        case (.prefix(let prefix), .exact(let path)), (.prefix(let prefix), .prefix(let path)):
            return path.utf8.starts(with: prefix.utf8)
        case (.exact(let mine), .exact(let path)):
            return mine.utf8.elementsEqual(path.utf8)
        case (.exact, _), (_, .any):
            return false
        }
    }
}

extension RouteConfig {
    /// Its path decoded as a request's is (`Router.percentDecoded`): a path written encoded in
    /// the file (`/files/my%20docs/`, the only way to write a space there) matches the
    /// requests the app serves under it, however the client encoded them.
    var matcher: RouteMatcher {
        let match: PathMatch = switch self.match {
        case .any: .any
        case .exact(let path): .exact(String(Router.percentDecoded(Substring(path))))
        case .prefix(let prefix): .prefix(String(Router.percentDecoded(Substring(prefix))))
        }
        return RouteMatcher(match: match, methods: self.methods)
    }
}

extension Substring {
    /// Whether these bytes begin with `prefix`'s. Both are native UTF-8 (the parser made one,
    /// the configuration the other), so they are compared in place: walking two `UTF8View`s
    /// index by index cost more than the rest of routing together.
    fileprivate func hasBytePrefix(_ prefix: String) -> Bool {
        guard self.utf8.count >= prefix.utf8.count else { return false }
        let inPlace = self.utf8.withContiguousStorageIfAvailable { mine in
            prefix.utf8.withContiguousStorageIfAvailable { theirs in
                UnsafeBufferPointer(rebasing: mine.prefix(theirs.count)).elementsEqual(theirs)
            }
        }
        return (inPlace ?? nil) ?? self.utf8.starts(with: prefix.utf8)
    }
}
