import Foundation

/// An email as the Worker sends it: RFC 5322 headers and a multipart/alternative body
/// (plain text and HTML), each part base64-encoded so any UTF-8 text travels safely.
public struct MailMessage: Sendable, Equatable {
    public var from: String          // "Name <addr>" or "addr"
    public var to: String
    public var subject: String
    public var text: String
    public var html: String?
    public var messageID: String     // without angle brackets

    public init(from: String, to: String, subject: String, text: String, html: String? = nil, messageID: String) {
        self.from = from
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
        self.messageID = messageID
    }

    /// The bare address of a "Name <addr>" string.
    public static func address(_ s: String) -> String {
        if let lt = s.lastIndex(of: "<"), let gt = s.lastIndex(of: ">"), lt < gt {
            return String(s[s.index(after: lt)..<gt])
        }
        return s.trimmingCharacters(in: .whitespaces)
    }

    /// Header values never carry CR/LF (no header injection); non-ASCII uses RFC 2047.
    static func headerValue(_ s: String) -> String {
        let clean = s.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        if clean.unicodeScalars.allSatisfy({ $0.isASCII }) { return clean }
        return "=?UTF-8?B?" + Data(clean.utf8).base64EncodedString() + "?="
    }

    static func base64Lines(_ s: String) -> String {
        let b = Data(s.utf8).base64EncodedString()
        var out = [String]()
        var i = b.startIndex
        while i < b.endIndex {
            let j = b.index(i, offsetBy: 76, limitedBy: b.endIndex) ?? b.endIndex
            out.append(String(b[i..<j]))
            i = j
        }
        return out.joined(separator: "\r\n")
    }

    public func rfc5322(date: Date = Date()) -> [UInt8] {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        let boundary = "=_swiftchat_" + Hex.encode(Crypto.randomBytes(12))
        var lines = [
            "From: " + MailMessage.headerValue(from),
            "To: " + MailMessage.headerValue(to),
            "Subject: " + MailMessage.headerValue(subject),
            "Date: " + formatter.string(from: date),
            "Message-ID: <" + MailMessage.headerValue(messageID) + ">",
            "MIME-Version: 1.0",
        ]
        if let html {
            lines += [
                "Content-Type: multipart/alternative; boundary=\"\(boundary)\"",
                "",
                "--\(boundary)",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "",
                MailMessage.base64Lines(text),
                "--\(boundary)",
                "Content-Type: text/html; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "",
                MailMessage.base64Lines(html),
                "--\(boundary)--",
                "",
            ]
        } else {
            lines += [
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "",
                MailMessage.base64Lines(text),
                "",
            ]
        }
        return Array(lines.joined(separator: "\r\n").utf8)
    }
}

/// A task on the `tasks.email` queue: a ready message to send. (Later task types render
/// their message from a template before reaching this shape.)
public struct EmailTask: Codable, Sendable, Equatable {
    public var id: String
    public var to: String
    public var subject: String
    public var text: String
    public var html: String?

    public init(id: String, to: String, subject: String, text: String, html: String? = nil) {
        self.id = id
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
    }
}
