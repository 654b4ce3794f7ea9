/// One `[[route]]`, with every policy key resolved: its own value, else `[defaults]`'s, else
/// the built-in default.
public struct RouteConfig: Sendable, Equatable {
    /// Unique; a label in metrics and logs, so limited to `[A-Za-z0-9_.-]`.
    public var name: String
    public var match: PathMatch
    /// Uppercased; nil matches every method.
    public var methods: Set<String>?
    public var policy: RoutePolicy
}

public enum PathMatch: Sendable, Equatable {
    case any
    case exact(String)
    case prefix(String)
}

/// What a route does to its requests; `[defaults]` holds one too.
public struct RoutePolicy: Sendable, Equatable {
    public var timeout: Duration = .seconds(30)
    public var bodyTimeout: Duration = .seconds(30)
    /// The route's bulkhead; nil when neither the route nor `[defaults]` has one.
    public var concurrency: ConcurrencyConfig?
    public var breaker = BreakerConfig()
    public var retry = RetryConfig()
    /// Sent instead of the generic 503 while the breaker is open.
    public var fallback: FallbackConfig?
}

public struct ConcurrencyConfig: Sendable, Equatable {
    public var softLimit = 200
    public var hardLimit = 250
    public var queueTimeout: Duration = .seconds(5)
}

public struct BreakerConfig: Sendable, Equatable {
    public var failureThreshold = 5
    public var failureRate = 0.5
    public var window = 100
    public var minimumRequests = 10
    public var recoveryTimeout: Duration = .seconds(30)
    public var maxRecoveryTimeout: Duration = .seconds(300)
    public var successThreshold = 3
    public var halfOpenRequests = 1
    public var failureStatuses: Set<Int> = [500, 502, 503, 504]
}

public struct RetryConfig: Sendable, Equatable {
    public var attempts = 3
    public var backoff: Duration = .milliseconds(25)
    public var maxBackoff: Duration = .milliseconds(250)
    public var on: Set<RetryCondition> = [.connectFailure, .reset, .status(503)]
    public var budget = 0.2
}

public enum RetryCondition: Hashable, Sendable, CustomStringConvertible {
    case connectFailure
    case reset
    case timeout
    case status(Int)

    /// "connect-failure", "reset", "timeout" or a status code such as "503".
    init?(_ text: String) {
        switch text {
        case "connect-failure": self = .connectFailure
        case "reset": self = .reset
        case "timeout": self = .timeout
        default:
            guard let code = Int(text), (100...599).contains(code) else { return nil }
            self = .status(code)
        }
    }

    public var description: String {
        switch self {
        case .connectFailure: "connect-failure"
        case .reset: "reset"
        case .timeout: "timeout"
        case .status(let code): String(code)
        }
    }
}

public struct FallbackConfig: Sendable, Equatable {
    public var status = 503
    public var contentType = "application/json"
    public var body = ""
}
