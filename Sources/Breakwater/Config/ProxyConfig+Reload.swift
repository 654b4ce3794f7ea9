/// What a reload (SIGHUP) can change, and what only a restart can.
///
/// The running configuration after a reload is the new file with every restart-only part kept
/// as it runs, so what the proxy uses is what it says it uses, and the next reload compares
/// the file with what is really in effect.
extension ProxyConfig {
    /// A part of the configuration only a restart changes, and the key the log names it by.
    private struct RestartOnlyPart: Sendable {
        let key: String
        /// Puts the running value into the configuration a reload applies.
        let keep: @Sendable (_ applied: inout ProxyConfig, _ running: ProxyConfig) -> Void
        /// Whether the file asks for something other than what is applied.
        let differs: @Sendable (_ file: ProxyConfig, _ applied: ProxyConfig) -> Bool

        /// - Parameter keep: for a part a reload applies in part; the whole part by default.
        init<Value: Equatable & SendableMetatype>(
            _ key: String,
            _ part: WritableKeyPath<ProxyConfig, Value> & Sendable,
            keep: (@Sendable (_ applied: inout ProxyConfig, _ running: ProxyConfig) -> Void)? = nil
        ) {
            self.key = key
            self.keep = keep ?? { applied, running in applied[keyPath: part] = running[keyPath: part] }
            self.differs = { file, applied in file[keyPath: part] != applied[keyPath: part] }
        }
    }

    private static let restartOnly: [RestartOnlyPart] = [
        RestartOnlyPart("listen", \.listen),
        RestartOnlyPart("upstream", \.upstream),
        RestartOnlyPart("server", \.server),
        RestartOnlyPart("upstream_pool", \.upstreamPool),
        RestartOnlyPart("admin", \.admin),
        RestartOnlyPart("app", \.app),
        RestartOnlyPart("log.level", \.log.level),
        RestartOnlyPart("readiness", \.readiness) { applied, running in
            // The probe runs as it started; how long requests wait for it, and the public path
            // that reports it, are per request. (`applied` still holds the file's table here.)
            let file = applied.readiness
            applied.readiness = running.readiness.map { running in
                var readiness = running
                if let file {
                    (readiness.hold, readiness.publicPath) = (file.hold, file.publicPath)
                }
                return readiness
            }
        },
    ]

    /// The configuration in effect after reloading `file` over this one.
    public func reloaded(with file: ProxyConfig) -> ProxyConfig {
        var applied = file
        for part in Self.restartOnly {
            part.keep(&applied, self)
        }
        return applied
    }

    /// The keys whose change in `file` a reload does not apply, for the log to name.
    public func keysNeedingRestart(toApply file: ProxyConfig) -> [String] {
        let applied = self.reloaded(with: file)
        return Self.restartOnly.filter { $0.differs(file, applied) }.map(\.key)
    }
}
