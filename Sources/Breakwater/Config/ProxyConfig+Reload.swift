/// What a reload (SIGHUP) can change, and what only a restart can.
///
/// The running configuration after a reload is the new file with every restart-only part kept
/// as it runs, so what the proxy uses is what it says it uses, and the next reload compares
/// the file with what is really in effect.
extension ProxyConfig {
    /// The configuration in effect after reloading `file` over this one.
    public func reloaded(with file: ProxyConfig) -> ProxyConfig {
        var applied = file
        applied.listen = self.listen
        applied.upstream = self.upstream
        applied.server = self.server
        applied.upstreamPool = self.upstreamPool
        applied.admin = self.admin
        applied.app = self.app
        applied.log.level = self.log.level
        // The probe runs as it started; how long requests wait for it, and the public path
        // that reports it, are per request.
        applied.readiness = self.readiness.map { running in
            var readiness = running
            if let new = file.readiness {
                (readiness.hold, readiness.publicPath) = (new.hold, new.publicPath)
            }
            return readiness
        }
        return applied
    }

    /// The keys whose change in `file` a reload does not apply, for the log to name.
    public func keysNeedingRestart(toApply file: ProxyConfig) -> [String] {
        let applied = self.reloaded(with: file)
        var keys: [String] = []
        if file.listen != applied.listen { keys.append("listen") }
        if file.upstream != applied.upstream { keys.append("upstream") }
        if file.server != applied.server { keys.append("server") }
        if file.upstreamPool != applied.upstreamPool { keys.append("upstream_pool") }
        if file.admin != applied.admin { keys.append("admin") }
        if file.app != applied.app { keys.append("app") }
        if file.log.level != applied.log.level { keys.append("log.level") }
        if file.readiness != applied.readiness { keys.append("readiness") }
        return keys
    }
}
