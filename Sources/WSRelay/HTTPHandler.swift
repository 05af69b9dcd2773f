import Foundation
import NIOCore
import NIOHTTP1
import ChatCore

/// Plain HTTP on the relay's port: GET /health for nginx and operators; anything that is
/// not a WebSocket upgrade on /ws gets a JSON 404.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let health: @Sendable () -> (Int, String)
    private var head: HTTPRequestHead?

    init(health: @escaping @Sendable () -> (Int, String)) { self.health = health }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, body): (Int, String)
            if head.uri == "/health" || head.uri.hasPrefix("/health?") {
                (status, body) = head.method == .GET || head.method == .HEAD ? health()
                    : (405, String(decoding: APIError.methodNotAllowed(["GET"]).body, as: UTF8.self))
            } else if head.uri == "/ws" || head.uri.hasPrefix("/ws?") {
                (status, body) = (400, String(decoding: APIError.badRequest("upgrade_required", "Connect with a WebSocket upgrade.").body, as: UTF8.self))
            } else {
                (status, body) = (404, String(decoding: APIError.notFound().body, as: UTF8.self))
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            headers.add(name: "Cache-Control", value: "no-store")
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
