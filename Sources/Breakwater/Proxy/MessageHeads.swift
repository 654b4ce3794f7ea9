import NIOCore
import NIOHTTP1

/// A request's head as the proxy reads it from a client: what NIO's `HTTPRequestHead` holds,
/// without the class NIO keeps the method, target and version in, which costs an allocation
/// for every head and reference counting for every copy of one, and with the fields as the
/// wire had them (`HeaderFields`).
struct RequestHead: Equatable {
    var version: HTTPVersion
    var method: HTTPMethod
    var uri: String
    var headers: HeaderFields
}

/// A response's head as the proxy reads it from the app (see `RequestHead`).
struct ResponseHead: Equatable {
    var version: HTTPVersion
    var status: HTTPResponseStatus
    var headers: HeaderFields
}

typealias RequestPart = HTTPPart<RequestHead, ByteBuffer>
typealias ResponsePart = HTTPPart<ResponseHead, ByteBuffer>
