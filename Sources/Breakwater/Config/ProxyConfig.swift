import Logging

/// The whole of `proxy.conf`, validated. See SPEC.md and proxy.conf.example for the keys; every
/// default here is the one they document.
public struct ProxyConfig: Sendable, Equatable {
    public var listen = HostPort(host: "0.0.0.0", port: 8080)
    /// Nil only when `[app]` starts the workers the proxy balances across.
    public var upstream: UpstreamAddress?
    public var server = ServerConfig()
    public var upstreamPool = UpstreamPoolConfig()
    public var admin = AdminConfig()
    public var concurrency = ConcurrencyConfig()
    /// Nil when the table is absent: the app counts as ready at once.
    public var readiness: ReadinessConfig?
    public var drain = DrainConfig()
    public var trace = TraceConfig()
    public var log = LogConfig()
    /// Nil unless the file has `[app]` (supervisor mode).
    public var app: AppConfig?
    /// The `[[route]]`s in file order, then the implicit route `default`, which matches all.
    public var routes: [RouteConfig] = [RouteConfig(name: "default", match: .any, methods: nil, policy: RoutePolicy())]
}

/// A TCP address to listen on or connect to; IPv6 hosts are written in brackets.
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

public enum UpstreamAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(HostPort)
    case unix(path: String)

    public var description: String {
        switch self {
        case .tcp(let hostPort): hostPort.description
        case .unix(let path): "unix:\(path)"
        }
    }

    /// The `Host` a request to this address carries when its client sent none (nginx's
    /// choice: the upstream's own name, `localhost` for a Unix socket).
    var hostField: String {
        switch self {
        case .tcp(let hostPort): hostPort.description
        case .unix: "localhost"
        }
    }
}

public struct ServerConfig: Sendable, Equatable {
    public var threads = 1
    public var headerReadTimeout: Duration = .seconds(10)
    public var idleTimeout: Duration = .seconds(75)
    public var maxHeaderBytes = 32 * 1024
    public var maxBodyBytes = 10 * 1024 * 1024
    /// Nil: derived from the file-descriptor limit (`DescriptorLimit.maxConnections`).
    public var maxConnections: Int?
}

public struct UpstreamPoolConfig: Sendable, Equatable {
    public var connectTimeout: Duration = .seconds(1)
    public var maxIdle = 64
    public var idleTimeout: Duration = .seconds(60)
}

public struct AdminConfig: Sendable, Equatable {
    public var listen = HostPort(host: "127.0.0.1", port: 9901)
    public var tokenEnv = "BREAKWATER_ADMIN_TOKEN"
}

public struct ReadinessConfig: Sendable, Equatable {
    public var path = "/health"
    public var interval: Duration = .seconds(2)
    public var timeout: Duration = .seconds(1)
    public var healthyThreshold = 1
    public var unhealthyThreshold = 3
    public var hold: Duration = .seconds(10)
    public var publicPath: String?
}

public struct DrainConfig: Sendable, Equatable {
    public var delay: Duration = .zero
    public var timeout: Duration = .seconds(20)
}

public struct TraceConfig: Sendable, Equatable {
    public var requestIDHeader = "X-Request-ID"
    public var traceparent = true
}

public struct LogConfig: Sendable, Equatable {
    public var access = true
    public var level = Logger.Level.info
}

public struct AppConfig: Sendable, Equatable {
    /// May stay empty in the file when the command comes after `--`.
    public var command: [String] = []
    public var workers = 1
    public var basePort = 8000
    public var restart = RestartPolicy.always
    public var restartBackoff: Duration = .seconds(1)
    public var stopTimeout: Duration = .seconds(10)

    public init() {}

    /// The command has `{port}`: worker `i` listens on `base_port + i`.
    public var usesPortPlaceholder: Bool {
        self.command.contains { $0.contains("{port}") }
    }

    /// Where worker `index` listens when the app's ports come from `base_port`.
    public func workerAddress(_ index: Int) -> UpstreamAddress {
        .tcp(HostPort(host: "127.0.0.1", port: self.basePort + index))
    }

    /// Why the workers cannot run as configured: several sharing one port. Nil while the
    /// command is unknown (it may come after `--`).
    public var sharedPortProblem: String? {
        guard self.workers > 1, !self.command.isEmpty, !self.usesPortPlaceholder else { return nil }
        return "workers = \(self.workers) needs {port} in the command, or they would share one port"
    }
}

public enum RestartPolicy: String, Sendable, Equatable, CaseIterable {
    case always
    case onFailure = "on-failure"
    case never
}
