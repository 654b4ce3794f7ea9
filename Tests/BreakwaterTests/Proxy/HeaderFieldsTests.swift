@testable import Breakwater
import NIOHTTP1
import Testing

/// How a head's fields are kept (`HeaderFields`): as llhttp hands them over, in pieces that
/// may lie in more than one read, and read back in place. `HTTPParserTests` holds the parser
/// that fills them to NIO's decoders; these cases pin down the builder itself, with reads
/// whose memory is overwritten as soon as they are done, as a socket's would be reused.
@Suite struct HeaderFieldsTests {
    /// The fields `pieces` build, each piece given from its own memory, scribbled over once
    /// the builder is told the read ended (`keepPieces`) when `readEnds` says so.
    private func built(_ pieces: [(text: String, ends: Piece?)], readEndsAfter readEnds: Set<Int>) -> [(String, String)] {
        var builder = HeaderFields.Builder()
        var read: [UnsafeMutableRawBufferPointer] = []
        defer { read.forEach { $0.deallocate() } }
        for (index, piece) in pieces.enumerated() {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(piece.text.utf8.count, 1), alignment: 1)
            memory.copyBytes(from: Array(piece.text.utf8))
            read.append(memory)
            if !piece.text.isEmpty {
                builder.append(UnsafeRawBufferPointer(rebasing: memory[0..<piece.text.utf8.count]))
            }
            switch piece.ends {
            case .name: _ = builder.endName()
            case .value: builder.endValue()
            case nil: break
            }
            if readEnds.contains(index) {
                builder.keepPieces()
                for memory in read { memory.initializeMemory(as: UInt8.self, repeating: UInt8(ascii: "#")) }
            }
        }
        return builder.build().withFields { fields in fields.map { ($0.name.string, $0.value.string) } }
    }

    private enum Piece { case name, value }

    @Test func fieldsComeBackInOrderWithDuplicatesAndEmptyValues() {
        let pieces: [(text: String, ends: Piece?)] = [
            ("Host", .name), ("example.com", .value),
            ("X-Empty", .name), ("", .value),
            ("Set-Cookie", .name), ("a=1", .value),
            ("set-cookie", .name), ("b=2", .value),
        ]
        let expected = [("Host", "example.com"), ("X-Empty", ""), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")]
        #expect(self.built(pieces, readEndsAfter: []).elementsEqual(expected, by: ==))
        // However the reads fall, what was read before is kept, and a name or value cut in
        // two by a read's end comes back whole.
        for cut in pieces.indices {
            #expect(self.built(pieces, readEndsAfter: [cut]).elementsEqual(expected, by: ==), "read ends after piece \(cut)")
        }
        let cutValue: [(text: String, ends: Piece?)] = [
            ("Host", .name), ("exam", nil), ("ple.com", .value), ("X-L", nil), ("ong", .name), ("", .value),
        ]
        #expect(self.built(cutValue, readEndsAfter: [1, 3]).elementsEqual([("Host", "example.com"), ("X-Long", "")], by: ==))
        #expect(self.built(cutValue, readEndsAfter: [0, 1, 2, 3, 4, 5]).elementsEqual([("Host", "example.com"), ("X-Long", "")], by: ==))
    }

    @Test func theBuilderStartsOverAfterEachHead() {
        var builder = HeaderFields.Builder()
        for name in ["A", "B"] {
            var name = name
            name.withUTF8 {
                builder.append(UnsafeRawBufferPointer($0))
                builder.keepPieces()  // the read ends: the name is copied out before its memory goes
            }
            _ = builder.endName()
            builder.endValue()
            let fields = builder.build()
            #expect(fields.count == 1)
            #expect(fields.httpHeaders.map(\.name) == [name])
        }
        #expect(builder.build().count == 0)
    }

    @Test func fieldsMadeFromStringsReadBackAsTheyWereGiven() {
        let headers = HTTPHeaders([("Content-Type", "text/plain"), ("X-Blank", ""), ("content-type", "ü")])
        let fields = HeaderFields(headers)
        #expect(fields.count == 3)
        #expect(fields.httpHeaders == headers)
        #expect(fields == ["Content-Type": "text/plain", "X-Blank": "", "content-type": "ü"])
        #expect(fields != ["Content-Type": "text/plain"])
    }
}
