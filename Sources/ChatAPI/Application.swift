import Foundation
import Logging
import ChatCore

/// The REST API: routes, the per-thread services and the one place that turns any thrown
/// error into a response (APIError as is, a dependency error as 503 naming it, anything
/// else as a logged 500 that leaks nothing).
public final class APIApplication: Sendable {
    public let router: Router
    private let services: [ThreadServices]
    private let logger = Logger(label: "api")

    public init(router: Router, services: [ThreadServices]) {
        self.router = router
        self.services = services
    }

    public func handle(thread: Int, _ request: HTTPRequest) -> HTTPReply {
        let services = self.services[thread]
        do {
            return try dispatch(request, services)
        } catch let e as APIError {
            return .error(e)
        } catch let e as DependencyError {
            logger.warning("dependency down", metadata: ["dependency": "\(e.dependency.rawValue)", "detail": "\(e.detail)",
                                                          "path": "\(request.path)"])
            return .error(.unavailable(e.dependency.rawValue))
        } catch let e as AMQPError {
            logger.error("broker refused", metadata: ["error": "\(e)", "path": "\(request.path)"])
            return .error(.unavailable("rabbitmq"))
        } catch {
            logger.error("unhandled error", metadata: ["error": "\(error)", "method": "\(request.method)", "path": "\(request.path)"])
            return .error(.internalError)
        }
    }

    private func dispatch(_ request: HTTPRequest, _ services: ThreadServices) throws -> HTTPReply {
        switch router.resolve(method: request.method, path: request.path) {
        case .notFound:
            throw APIError.notFound("not_found", "There is no such endpoint.")
        case .methodNotAllowed(let allowed):
            throw APIError.methodNotAllowed(allowed)
        case .matched(let route, let params):
            if !request.body.isEmpty, request.method == "POST" || request.method == "PUT" || request.method == "PATCH" {
                // Not Foundation's trimmingCharacters(in:): it bridges to NSString on every request.
                let type = request.headers["content-type"]?.split(separator: ";").first.map { String($0).trimmingWhitespace.lowercased() }
                guard type == "application/json" else { throw APIError.unsupportedMediaType }
            }
            var identity: Identity? = nil
            if route.auth == .user {
                identity = try authenticate(request, services)
            }
            return try route.handler(RequestContext(request: request, params: params, identity: identity, services: services))
        }
    }

    /// Bearer JWT (HS256, pinned) whose `sid` names a live session owned by `sub`.
    func authenticate(_ request: HTTPRequest, _ services: ThreadServices) throws -> Identity {
        guard let header = request.headers["authorization"], header.count > 7,
              header.prefix(7).lowercased() == "bearer " else { throw APIError.unauthorized }
        let token = String(header.dropFirst(7)).trimmingWhitespace
        guard let claims = try? services.verifiedTokens.verify(token, with: services.jwt) else { throw APIError.unauthorized }
        guard try services.sessions.authenticate(claims.sid) == claims.sub else { throw APIError.unauthorized }
        return Identity(userID: claims.sub, sessionID: claims.sid)
    }
}
