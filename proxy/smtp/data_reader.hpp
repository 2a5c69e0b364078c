// The DATA and BDAT content readers: the one place where message bytes from the
// client are judged. Lines end only at CRLF; the end-of-data marker is only
// CRLF.CRLF (RFC 5321 4.1.1.4); stray CR, LF and NUL never pass (SMTP smuggling).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "policy/config.hpp"

namespace mxgate::smtp {

struct DataLimits {
  std::uint64_t max_message_size = 25ull * 1024 * 1024;  // of the unstuffed content
  std::size_t max_text_line = 1000;                      // including CRLF
  policy::BareNewline bare_newline = policy::BareNewline::reject;
};

// Why the content is not acceptable (the first reason found wins).
enum class DataProblem { none, bare_newline, too_big, line_too_long };

namespace detail {
// What DataReader and ChunkReader share: the limits, the counters and the one place
// where content bytes are judged and appended.
struct ContentSink {
  DataLimits limits;
  DataProblem problem = DataProblem::none;
  std::uint64_t size = 0;         // content bytes (after unstuffing), also past a problem
  std::size_t stray = 0;          // bare CR, bare LF and NUL bytes seen
  std::size_t line_length = 0;    // content bytes of the current line, without its CRLF
  const char* pending = nullptr;  // clean input bytes not yet appended (see line())
  std::size_t pending_length = 0;

  // Line content without CR/LF/NUL; appended up to the first limit it crosses.
  void content(const char* bytes, std::size_t length, std::string& out);
  // Line content followed by its CRLF, which sits at bytes[length] in the input.
  // Consecutive clean lines are appended as one run, at the next flush().
  void line(const char* bytes, std::size_t length, std::string& out);
  // Appends the pending run of clean lines; called before any other append and
  // before a feed returns (the run points into the caller's input).
  void flush(std::string& out);
  // The CRLF that ends a line.
  void end_line(std::string& out);
  // A bare CR, bare LF or NUL: one space in normalize mode, a problem in reject mode.
  void stray_byte(std::string& out);
};
}  // namespace detail

// Reads DATA content (after the 354). Feed the raw bytes as they arrive; the reader
// un-stuffs dots and appends canonical content (every line ending in CRLF, no
// end marker) to the output string. After a problem it keeps reading, to find the
// real end marker, but stops appending: `out` then holds a prefix to discard.
// Nothing allocated per line; any split of the input into feeds gives the same result.
// The rules, exactly:
// - A line ends only at CRLF, and not at a CRLF whose CR follows a bare CR: "\r\r\n"
//   is three stray bytes, so "\r\r\n.\r\n" is not an end marker.
// - Stray bytes (bare CR, bare LF, NUL): reject mode sets bare_newline; normalize mode
//   writes one space for each (as Postfix cleanup does), never a line break.
// - The end marker is a line that is exactly ".\r\n" (also the first line). Any other
//   line starting with '.' loses that dot (RFC 5321 4.5.2).
// - max_text_line counts a line after unstuffing, including its CRLF.
// - max_message_size counts content bytes after unstuffing, CRLFs included.
class DataReader {
 public:
  explicit DataReader(const DataLimits& limits);

  struct Result {
    std::size_t consumed = 0;  // bytes of `input` used; the rest belongs to the next command
    bool done = false;         // the CRLF.CRLF marker was seen (and consumed)
  };
  Result feed(std::string_view input, std::string& out);

  DataProblem problem() const { return sink_.problem; }
  std::uint64_t size() const { return sink_.size; }        // unstuffed content bytes seen
  std::size_t stray_bytes() const { return sink_.stray; }  // bare CR/LF/NUL seen
  void reset();

  // Where the reader is within the line structure; see data_reader.cpp.
  enum class State : std::uint8_t {
    line_start,
    in_line,
    carriage_return,
    stray_carriage_return,
    dot,
    dot_carriage_return,
    done
  };

 private:
  detail::ContentSink sink_;
  State state_ = State::line_start;
};

// Checks one BDAT chunk's bytes (no dot-stuffing in BDAT, RFC 3030) with the same
// rules as DataReader, appending canonical content. A CR at the end of a chunk is
// remembered, since its LF may start the next one.
class ChunkReader {
 public:
  explicit ChunkReader(const DataLimits& limits);
  void feed(std::string_view chunk, std::string& out);
  // Call after the LAST chunk: a dangling CR is a stray byte, and a last line without
  // CRLF gets one (RFC 3030 wants canonical content; we complete it, as Postfix does).
  void finish(std::string& out);
  DataProblem problem() const { return sink_.problem; }
  std::uint64_t size() const { return sink_.size; }
  std::size_t stray_bytes() const { return sink_.stray; }
  void reset();

 private:
  detail::ContentSink sink_;
  DataReader::State state_ = DataReader::State::line_start;
};

// Appends `content` (canonical, CRLF lines) to `out` as DATA wire form: every line
// that starts with '.' gets one more '.', and the ".\r\n" terminator is added.
// A content not ending in CRLF gets one first.
void stuff_for_data(std::string_view content, std::string& out);

}  // namespace mxgate::smtp
