// TEMPORARY: replaced by the config helper's module.
import Logging
public struct HostPort: Sendable, Equatable, CustomStringConvertible { public var host: String; public var port: Int; public var description: String { "\(host):\(port)" } }
public enum UpstreamAddress: Sendable, Equatable { case tcp(HostPort); case unix(path: String) }
public struct ServerConfig: Sendable, Equatable { public var threads = 1; public var headerReadTimeout: Duration = .seconds(10); public var idleTimeout: Duration = .seconds(75); public var maxHeaderBytes = 32768; public var maxBodyBytes = 10_000_000; public var maxConnections = 10000 }
public struct UpstreamPoolConfig: Sendable, Equatable { public var connectTimeout: Duration = .seconds(1); public var maxIdle = 64; public var idleTimeout: Duration = .seconds(60) }
public struct DrainConfig: Sendable, Equatable { public var delay: Duration = .zero; public var timeout: Duration = .seconds(20) }
public struct LogConfig: Sendable, Equatable { public var access = true; public var level: Logger.Level = .info }
public enum PathMatch: Sendable, Equatable { case any; case exact(String); case prefix(String) }
public struct RoutePolicy: Sendable, Equatable { public var timeout: Duration = .seconds(30); public var bodyTimeout: Duration = .seconds(30) }
public struct RouteConfig: Sendable, Equatable { public var name: String; public var match: PathMatch; public var methods: Set<String>?; public var policy: RoutePolicy }
public struct AppConfig: Sendable, Equatable { public var command: [String] = [] }
public struct ProxyConfig: Sendable, Equatable { public var listen: HostPort; public var upstream: UpstreamAddress?; public var server = ServerConfig(); public var upstreamPool = UpstreamPoolConfig(); public var drain = DrainConfig(); public var log = LogConfig(); public var app: AppConfig?; public var routes: [RouteConfig] }
public struct ConfigErrors: Error, CustomStringConvertible { public var description: String }
public enum ConfigLoader { public static func load(path: String) throws -> ProxyConfig { var c = ProxyConfig(listen: HostPort(host: "127.0.0.1", port: 8080), upstream: .tcp(HostPort(host: "127.0.0.1", port: 8000)), routes: [RouteConfig(name: "default", match: .any, methods: nil, policy: RoutePolicy())]); c.server.headerReadTimeout = .seconds(2); c.server.idleTimeout = .seconds(3); return c }; public static func parse(_ t: String, fileName: String) throws -> ProxyConfig { fatalError() } }
