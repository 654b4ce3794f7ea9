#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's file-descriptor limit (RLIMIT_NOFILE), which bounds the connections the proxy
/// can hold: a client connection and, while its request is forwarded or tunnelled, one to the
/// app.
public enum DescriptorLimit {
    /// Descriptors kept back from client connections: listeners, logs, the admin side.
    private static let reserve = 64

    /// Raises the soft limit to the hard one, as Go's runtime and HAProxy do: the soft limit is
    /// often a 1,024 left over from another era, while the hard one is what the administrator
    /// (or the container runtime) actually allows.
    public static func raiseToHardLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// The current soft limit.
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// `server.max_connections` in force: the file's, or else half of what is left after the
    /// reserve (each client connection may need an app connection beside it), at most SPEC's
    /// 10,000 and at least 16. At that bound new connections are refused cleanly rather than
    /// failing `accept` with EMFILE.
    static func maxConnections(configured: Int?, descriptors: Int) -> Int {
        configured ?? min(10_000, max(16, (descriptors - Self.reserve) / 2))
    }

    /// Whether `connections` client connections, each with an app connection, fit in
    /// `descriptors`.
    static func fits(_ connections: Int, in descriptors: Int) -> Bool {
        connections * 2 + Self.reserve <= descriptors
    }
}
