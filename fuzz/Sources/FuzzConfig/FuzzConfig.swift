// The configuration loader under libFuzzer: any bytes, read as a proxy.conf, either give a
// configuration the proxy can start from or `ConfigErrors` whose every message names the file
// and, where a line can be told, a line that exists — never a crash.
//
// A configuration that loads is then built into what the data path uses (routes, breakers,
// gates, the router, the fallback answers), as `ProxyServer.start` and a reload would, so a
// value the loader lets through but the runtime cannot take is found here too.

@testable import Breakwater
import Foundation
import FuzzDriver
import Logging
import NIOCore
import NIOHTTP1

@main
enum FuzzConfigMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzConfig(data, size) })
    }
}

private let fileName = "fuzz.conf"
private let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    // What `ConfigLoader.load` does with a file: read it as UTF-8 (invalid sequences repaired).
    let text = String(decoding: bytes, as: UTF8.self)
    let config: ProxyConfig
    do {
        config = try ConfigLoader.parse(text, fileName: fileName)
    } catch {
        checkMessages(error, text: text)
        return 0
    }
    checkRuntime(config)
    // The same text reads the same way twice (a reload of an unchanged file changes nothing).
    if (try? ConfigLoader.parse(text, fileName: fileName)) != config {
        fail("parsing the same text twice gave different configurations")
    }
    return 0
}

/// `ConfigProblem.description`: `file:line: key.path: message`, or `file: ...` when no line
/// can be told (a missing key, say).
private func checkMessages(_ errors: ConfigErrors, text: String) {
    if errors.problems.isEmpty {
        fail("ConfigErrors without a problem")
    }
    // Lines as toml++ counts them: by LF (a CRLF is one grapheme, so not by Character).
    let lineCount = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).count
    for problem in errors.problems {
        let message = problem.description
        if problem.file != fileName || !message.hasPrefix("\(fileName):") {
            fail("a message does not name the file: \(message)")
        }
        if problem.message.isEmpty {
            fail("an empty message: \(message)")
        }
        if let line = problem.line {
            if !(1...lineCount).contains(line) {
                fail("line \(line) of a \(lineCount)-line file: \(message)")
            }
            if !message.hasPrefix("\(fileName):\(line): ") {
                fail("a message not in the documented form: \(message)")
            }
        } else if !isLinelessByDesign(problem) {
            fail("a message without a line: \(message)", "file:\n\(text)")
        }
        if message.contains("\n") && !problem.message.hasPrefix("syntax error") {
            fail("a message spans lines: \(message)")
        }
    }
}

/// The problems that have no line by design: a key that is missing has nowhere to point.
private func isLinelessByDesign(_ problem: ConfigProblem) -> Bool {
    problem.message.hasPrefix("missing required key")
}

/// Builds what the data path builds from a configuration, and asks it a few questions.
private func checkRuntime(_ config: ProxyConfig) {
    guard config.routes.last?.match == .any, config.routes.last?.name == "default" else {
        fail("the last route is not the implicit default")
    }
    if config.upstream == nil && config.app == nil {
        fail("a configuration with neither upstream nor [app]")
    }
    let lifecycle = Lifecycle(appReadyAtStart: config.readiness == nil)
    let shared = ProxyShared(configuration: config, lifecycle: lifecycle, logger: logger)
    for uri in ["/", "/api/v1/webhooks/x?y=1", "http://h/a/b", "*"] {
        for method in ["GET", "POST", "DELETE"] {
            _ = shared.route(method: method, uri: uri)
        }
    }
    for route in shared.routes {
        let now = PolicyInstant(nanoseconds: 1_000_000_000)
        if case .admitted(let probe) = route.admit(now: now) {
            route.record(.failure, probe: probe, now: now)
        }
        _ = route.tryAcquireRetry(now: now)
        _ = route.retryPolicy.delayBeforeRetry(
            after: .reset, attemptsMade: 1, isIdempotent: true, bodyReplayable: true, elapsed: .zero, random: 0.5
        )
        _ = route.breakerSnapshot(now: now)
        checkFallback(route.policy.fallback, route: route.name)
    }
    // The durations the event loops schedule with.
    let durations: [Duration] =
        [config.server.headerReadTimeout, config.server.idleTimeout, config.upstreamPool.connectTimeout, config.upstreamPool.idleTimeout / 4]
        + config.routes.flatMap { [$0.policy.timeout, $0.policy.bodyTimeout, $0.policy.concurrency?.queueTimeout ?? .zero] }
    for duration in durations {
        _ = NIODeadline.now() + TimeAmount(duration)
    }
    _ = HTTPParser(kind: .request, limits: .proxyLimits(maxHeadBytes: config.server.maxHeaderBytes))
}

/// A route's fallback is what clients get while its breaker is open: it must be an HTTP response
/// a client can read — a final status, header values without line breaks.
private func checkFallback(_ fallback: FallbackConfig?, route: String) {
    guard let fallback else { return }
    let response = LocalResponse(.breakerOpen, retryAfterSeconds: 1, fallback: fallback)
    let code = response.status.code
    if code < 200 || ((code == 204 || code == 304) && !fallback.body.isEmpty) {
        fail("route \(route): the fallback status \(code) cannot carry the answer (body \(fallback.body.debugDescription))")
    }
    // The one header value a fallback supplies; the rest are the proxy's own.
    if response.contentType.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) {
        fail("route \(route): the fallback's content-type would break the response: \(response.contentType.debugDescription)")
    }
}

/// A finding: say what broke, then trap so libFuzzer saves the input.
private func fail(_ message: String, _ details: String...) -> Never {
    var text = "FUZZ PROPERTY VIOLATED: \(message)\n"
    for detail in details { text += "  \(detail)\n" }
    FileHandle.standardError.write(Data(text.utf8))
    fatalError(message)
}
