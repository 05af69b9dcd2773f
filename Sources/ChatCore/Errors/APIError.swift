import Foundation

/// An error an API client sees: HTTP status, a stable machine-readable code and a plain
/// sentence. Handlers throw it; one place turns it into the JSON envelope of API.md.
public struct APIError: Error, Equatable, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    /// Extra response headers (Allow for 405, Retry-After for 429/503).
    public var headers: [String: String]

    public init(_ status: Int, _ code: String, _ message: String, headers: [String: String] = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public static func badRequest(_ code: String = "bad_request", _ message: String) -> APIError { APIError(400, code, message) }
    public static let unauthorized = APIError(401, "unauthorized", "Sign in first: the token is missing, invalid or expired.")
    public static func forbidden(_ code: String = "forbidden", _ message: String = "You are not allowed to do that.") -> APIError { APIError(403, code, message) }
    public static func notFound(_ code: String = "not_found", _ message: String = "Nothing is here.") -> APIError { APIError(404, code, message) }
    public static func methodNotAllowed(_ allowed: [String]) -> APIError {
        APIError(405, "method_not_allowed", "This path does not accept that method.", headers: ["Allow": allowed.joined(separator: ", ")])
    }
    public static func conflict(_ code: String, _ message: String) -> APIError { APIError(409, code, message) }
    public static let payloadTooLarge = APIError(413, "payload_too_large", "The request body is larger than 64 KiB.")
    public static let unsupportedMediaType = APIError(415, "unsupported_media_type", "Send the body as application/json.")
    public static func tooManyRequests(_ code: String = "too_many_requests", retryAfter: Int) -> APIError {
        APIError(429, code, "Too many requests; try again in \(retryAfter) s.", headers: ["Retry-After": String(retryAfter)])
    }
    public static func unavailable(_ dependency: String, retryAfter: Int = 5) -> APIError {
        APIError(503, "\(dependency)_unavailable", "The service is temporarily unavailable: \(dependency) is down.",
                 headers: ["Retry-After": String(retryAfter)])
    }
    public static let internalError = APIError(500, "internal_error", "Something went wrong on our side; it has been logged.")

    /// `{"error": {"code", "message"}}`
    public var body: [UInt8] {
        Array("{\"error\":{\"code\":\(JSON.quote(code)),\"message\":\(JSON.quote(message))}}".utf8)
    }
}

/// A dependency (a data service or broker) that did not answer. Mapped to 503 naming it;
/// its detail goes to the log only, never to the client.
public struct DependencyError: Error, CustomStringConvertible, Sendable {
    public enum Dependency: String, Sendable, CaseIterable {
        case postgresql, mongodb, redis, rabbitmq, smtp, http
    }
    public var dependency: Dependency
    public var detail: String

    public init(_ dependency: Dependency, _ detail: String) {
        self.dependency = dependency
        self.detail = detail
    }

    public var description: String { "\(dependency.rawValue): \(detail)" }
}
