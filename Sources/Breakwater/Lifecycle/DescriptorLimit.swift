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
    /// Raises the soft limit to the hard one, as Go's runtime and HAProxy do: the soft limit is
    /// often a 1,024 left over from another era, while the hard one is what the administrator
    /// (or the container runtime) actually allows. Returns the limit now in force.
    @discardableResult
    public static func raiseToHardLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
                limit = raised
            }
        }
        return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// The current soft limit.
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// `server.max_connections` when the file does not set it: half of what is left after a
    /// reserve for listeners, logs and the like (each client connection may need an app
    /// connection beside it), at most SPEC's 10,000 and at least 16. At that bound new
    /// connections are refused cleanly rather than failing `accept` with EMFILE.
    public static func defaultMaxConnections(descriptors: Int) -> Int {
        min(10_000, max(16, (descriptors - 64) / 2))
    }
}
