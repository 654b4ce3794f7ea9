import NIOCore

/// How a client connection closes after its last answer without losing that answer.
///
/// A client may still be sending when the proxy decides to close: the rest of a body the proxy
/// refused (413, a shed upload) or the app answered early, requests pipelined behind a
/// `Connection: close`. Bytes that reach a closed socket are answered with a reset, and a
/// client that meets a reset while sending (most HTTP client libraries read the response only
/// once the body is out) reports "connection reset" instead of the answer. So, like nginx's
/// `lingering_close` and Apache's lingering close: once the answer is out, the proxy ends its
/// side of the stream (the client reads the answer, then the end), reads and drops whatever
/// still comes, and closes when the client does, or after `lingerTime` at the most.
enum LingeringClose {
    /// The longest a connection reads and drops after its last answer. Enough for the answer
    /// to cross a network and a client to stop sending; short enough that a client blasting
    /// bytes at a closed door costs little.
    static let lingerTime = TimeAmount.seconds(2)

    /// Closes `channel` once `written` (the last answer's final write) completes, lingering as
    /// above; a client that has not taken the answer within `writeTimeout` is closed on at once.
    ///
    /// - Parameter lingering: false when the client is not sending: a drain closing a
    ///   connection between requests waits only for the answer to leave, as nginx closes idle
    ///   connections on a graceful shutdown.
    static func close(_ channel: any Channel, after written: EventLoopFuture<Void>, writeTimeout: TimeAmount, lingering: Bool = true) {
        let loop = channel.eventLoop.assumeIsolated()
        let stalled = loop.scheduleTask(in: writeTimeout) { channel.close(promise: nil) }
        written.assumeIsolated().whenComplete { result in
            stalled.cancel()
            guard lingering, case .success = result, channel.isActive else {
                channel.close(promise: nil)
                return
            }
            channel.close(mode: .output, promise: nil)
            let linger = loop.scheduleTask(in: Self.lingerTime) { channel.close(promise: nil) }
            channel.closeFuture.assumeIsolated().whenComplete { _ in linger.cancel() }
            // Reads go on (the handlers drop what arrives) so that the client's bytes are taken
            // and its close is seen.
            channel.read()
        }
    }
}
