import ArgumentParser
import Breakwater
import Foundation
import Logging
import ServiceLifecycle

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
        let configuration = try self.options.load()
        if !self.appCommand.isEmpty || configuration.app != nil {
            FileHandle.standardError.write(Data("breakwater: supervisor mode (`-- CMD` or [app]) is not available in this version\n".utf8))
            throw ExitCode(2)
        }
        let level = configuration.log.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "breakwater")
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: ProxyService(configuration: configuration, logger: logger))],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        try await group.run()
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
