import ArgumentParser
import Breakwater
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

@main
struct BreakwaterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakwater",
        abstract: "A resilience sidecar: a reverse proxy in front of one HTTP app.",
        subcommands: [Run.self, Check.self],
        defaultSubcommand: Run.self
    )
}

/// `--config`, shared by every subcommand.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "The configuration file (default: $BREAKWATER_CONFIG, else ./proxy.conf).")
    var config: String?

    var path: String {
        self.config ?? ProcessInfo.processInfo.environment["BREAKWATER_CONFIG"] ?? "proxy.conf"
    }

    /// Loads the file or prints every problem in it to stderr.
    func load() throws -> ProxyConfig {
        do {
            return try ConfigLoader.load(path: self.path)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the proxy (the default).",
        discussion: "Give the app's command after `--` to have Breakwater start and supervise it."
    )

    @OptionGroup var options: ConfigOptions

    @Argument(parsing: .postTerminator, help: "The app's command, after `--` (supervisor mode).")
    var appCommand: [String] = []

    func run() async throws {
        // A reader of stdout (the access log) or stderr that goes away must cost log lines, not
        // the process and every request in it: as in nginx and HAProxy, SIGPIPE is ignored and
        // a failed write is an error to handle. The app's processes get the default back.
        signal(SIGPIPE, SIG_IGN)
        let configuration = Self.completed(try self.options.load(), appCommand: self.appCommand)
        let workers = try configuration.app.map { try Self.supervisedWorkers($0, configuration: configuration) }
        let upstreams = try workers.map { try UpstreamSet(addresses: $0.map(\.address), supervised: true) }
        let level = configuration.log.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "breakwater")
        DescriptorLimit.raiseToHardLimit()
        let lifecycle = Lifecycle(appReadyAtStart: configuration.readiness == nil && workers == nil)
        let proxy = ProxyService(configuration: configuration, upstreams: upstreams, lifecycle: lifecycle, logger: logger)
        // Shut down in reverse: the proxy drains first, while the admin listener still
        // answers `/health/ready` with 503; the app stops after the drain.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: AdminService(configuration: configuration.admin, server: configuration.server, lifecycle: lifecycle, proxy: proxy, logger: logger))
        ]
        let supervisor: AppSupervisor? =
            if let app = configuration.app, let workers, let upstreams {
                AppSupervisor(
                    app: app,
                    commands: workers.map(\.command),
                    upstreams: upstreams,
                    readiness: configuration.readiness,
                    lifecycle: lifecycle,
                    logger: logger
                )
            } else {
                nil
            }
        if let supervisor {
            services.append(.init(service: supervisor))
            lifecycle.onRollingRestartRequested {
                supervisor.startRollingRestart()
            }
        } else if let readiness = configuration.readiness, let upstream = configuration.upstream {
            services.append(.init(service: ReadinessProber(configuration: readiness, upstream: upstream, lifecycle: lifecycle, logger: logger)))
        }
        services.append(.init(service: proxy))
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        lifecycle.onDrainRequested {
            Task { await group.triggerGracefulShutdown() }
        }
        let (path, appCommand) = (self.options.path, self.appCommand)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                await Self.handleSignals(group: group, proxy: proxy, supervisor: supervisor, lifecycle: lifecycle, configurationPath: path, appCommand: appCommand, logger: logger)
            }
            try await tasks.next()
            tasks.cancelAll()
        }
        if let code = lifecycle.exitCode {
            throw ExitCode(code)
        }
    }

    /// The file as this process runs it, at start and on every reload alike: the app's command
    /// from after `--`, and in supervisor mode without `upstream`, the first worker's address
    /// (`127.0.0.1:base_port`), so that a reload compares like with like.
    private static func completed(_ file: ProxyConfig, appCommand: [String]) -> ProxyConfig {
        var configuration = file
        if !appCommand.isEmpty {
            var app = configuration.app ?? AppConfig()
            app.command = appCommand
            configuration.app = app
        }
        if let app = configuration.app, configuration.upstream == nil {
            configuration.upstream = app.workerAddress(0)
        }
        return configuration
    }

    /// Each worker's command with `{port}` filled in, and where it listens: `base_port + i`, or
    /// with one worker and no `{port}`, `upstream` (default `127.0.0.1:base_port`).
    private static func supervisedWorkers(_ app: AppConfig, configuration: ProxyConfig) throws -> [(command: [String], address: UpstreamAddress)] {
        guard !app.command.isEmpty else {
            FileHandle.standardError.write(Data("breakwater: supervisor mode needs the app's command: [app] command, or after `--`\n".utf8))
            throw ExitCode.failure
        }
        if let problem = app.sharedPortProblem {
            FileHandle.standardError.write(Data("breakwater: [app] \(problem)\n".utf8))
            throw ExitCode.failure
        }
        if !app.usesPortPlaceholder {
            return [(app.command, configuration.upstream ?? app.workerAddress(0))]
        }
        return (0..<app.workers).map { index in
            (app.command.map { $0.replacingOccurrences(of: "{port}", with: String(app.basePort + index)) }, app.workerAddress(index))
        }
    }

    /// SIGTERM and SIGINT drain; a second one exits at once, killing the supervised app's
    /// process groups first. SIGHUP reloads the file; SIGUSR2 restarts the supervised app's
    /// workers one at a time.
    private static func handleSignals(
        group: ServiceGroup,
        proxy: ProxyService,
        supervisor: AppSupervisor?,
        lifecycle: Lifecycle,
        configurationPath: String,
        appCommand: [String],
        logger: Logger
    ) async {
        var draining = false
        for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup, .sigusr2) {
            switch signal {
            case .sigusr2:
                lifecycle.requestRollingRestart()
            case .sighup:
                let succeeded = await Self.reload(proxy: proxy, path: configurationPath, appCommand: appCommand, logger: logger)
                lifecycle.metrics.recordReload(succeeded: succeeded)
            default:
                if draining {
                    logger.warning("second signal during the drain: exiting now", metadata: ["signal": "\(signal)"])
                    supervisor?.killAll()
                    Foundation.exit(1)
                }
                draining = true
                logger.notice("signal received: draining", metadata: ["signal": "\(signal)"])
                await group.triggerGracefulShutdown()
            }
        }
    }

    /// Reads and validates the file again; a broken file leaves the running configuration be.
    /// The file is parsed in a child process first (`ConfigCheckProcess`), so that one that
    /// crashes the TOML parser crashes the child, not the proxy.
    private static func reload(proxy: ProxyService, path: String, appCommand: [String], logger: Logger) async -> Bool {
        if case .crashed(let signal) = await ConfigCheckProcess.run(path: path) {
            logger.error(
                "configuration reload failed: the file crashes the TOML parser; keeping the running one",
                metadata: ["file": "\(path)", "signal": "\(signal)", "see": "breakwater check --config \(path)"]
            )
            return false
        }
        do {
            let configuration = Self.completed(try ConfigLoader.load(path: path), appCommand: appCommand)
            guard let needsRestart = proxy.reload(configuration) else {
                logger.warning("configuration reload not applied: the proxy is not serving (starting, or stopping after its drain)", metadata: ["file": "\(path)"])
                return false
            }
            logger.notice("configuration reloaded", metadata: ["file": "\(path)"])
            if !needsRestart.isEmpty {
                logger.warning("changes that take a restart were not applied", metadata: ["keys": "\(needsRestart.joined(separator: ", "))"])
            }
            return true
        } catch {
            logger.error("configuration reload failed; keeping the running one", metadata: ["problems": "\(error)"])
            return false
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate the configuration file; exit 0 or 1.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        _ = try self.options.load()
        print("\(self.options.path): ok")
    }
}
