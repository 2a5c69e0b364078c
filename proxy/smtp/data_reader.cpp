// DATA and BDAT content readers: canonical CRLF lines out, SMTP smuggling
// (bare CR/LF, look-alike end markers) refused or neutralised, limits enforced.
// Hot path: special bytes are found 16 at a time (SSE2) and runs of clean lines are
// copied with one append.
#include "proxy/smtp/data_reader.hpp"

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mxgate::smtp {

namespace detail {

void ContentSink::flush(std::string& out) {
  if (pending_length > 0) {
    out.append(pending, pending_length);
  }
  pending = nullptr;
  pending_length = 0;
}

void ContentSink::content(const char* bytes, std::size_t length, std::string& out) {
  flush(out);
  const std::uint64_t size_before = size;
  const std::size_t line_before = line_length;
  size += length;
  line_length += length;
  if (problem != DataProblem::none) {
    return;
  }
  // Append exactly up to the first byte that crosses a limit, so that the output does
  // not depend on how the input was split into feeds.
  std::size_t allowed = length;
  DataProblem found = DataProblem::none;
  if (size > limits.max_message_size) {
    allowed = static_cast<std::size_t>(limits.max_message_size - size_before);
    found = DataProblem::too_big;
  }
  // The line limit includes the CRLF that will end the line (RFC 5321 4.5.3.1.6).
  const std::size_t line_limit = limits.max_text_line > 2 ? limits.max_text_line - 2 : 0;
  if (line_length > line_limit && line_limit - line_before < allowed) {
    allowed = line_limit - line_before;
    found = DataProblem::line_too_long;
  }
  out.append(bytes, allowed);
  problem = found;
}

void ContentSink::line(const char* bytes, std::size_t length, std::string& out) {
  const std::size_t line_limit = limits.max_text_line > 2 ? limits.max_text_line - 2 : 0;
  if (problem == DataProblem::none && line_length + length <= line_limit &&
      size + length + 2 <= limits.max_message_size) {
    // Output equals input for clean lines: extend the pending run, copy it later.
    if (pending != nullptr && pending + pending_length == bytes) {
      pending_length += length + 2;
    } else {
      flush(out);
      pending = bytes;
      pending_length = length + 2;
    }
    size += length + 2;
    line_length = 0;
    return;
  }
  content(bytes, length, out);
  end_line(out);
}

void ContentSink::end_line(std::string& out) {
  flush(out);
  size += 2;
  line_length = 0;
  if (problem != DataProblem::none) {
    return;
  }
  if (size > limits.max_message_size) {
    problem = DataProblem::too_big;
    return;
  }
  out.append("\r\n", 2);
}

void ContentSink::stray_byte(std::string& out) {
  flush(out);
  ++stray;
  if (limits.bare_newline == policy::BareNewline::normalize) {
    // Postfix cleanup's choice: a space keeps the line structure the client's CRLFs
    // gave, so no reader downstream can see a line break that we did not.
    content(" ", 1, out);
  } else if (problem == DataProblem::none) {
    problem = DataProblem::bare_newline;
  }
}

}  // namespace detail

namespace {

using State = DataReader::State;

// The next CR, LF or NUL at or after `position`, or `end`. Sixteen bytes at a time
// where SSE2 exists (every x86-64): one pass over the content whatever its shape.
inline const char* find_special(const char* position, const char* end) {
#if defined(__SSE2__)
  const __m128i carriage_return = _mm_set1_epi8('\r');
  const __m128i line_feed = _mm_set1_epi8('\n');
  const __m128i nul = _mm_setzero_si128();
  while (end - position >= 16) {
    const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(position));
    const __m128i hits = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(chunk, carriage_return), _mm_cmpeq_epi8(chunk, line_feed)),
        _mm_cmpeq_epi8(chunk, nul));
    const int mask = _mm_movemask_epi8(hits);
    if (mask != 0) {
      return position + __builtin_ctz(static_cast<unsigned>(mask));
    }
    position += 16;
  }
#endif
  while (position < end && *position != '\r' && *position != '\n' && *position != '\0') {
    ++position;
  }
  return position;
}

// The states shared by both readers: inside a line, after a CR, after a bare CR.
// Returns with `position` == `end` or with the state at line_start.
const char* scan_line_body(State& state, const char* position, const char* end,
                           detail::ContentSink& sink, std::string& out) {
  while (position < end) {
    switch (state) {
      case State::in_line: {
        const char* special = find_special(position, end);
        // The common case, a whole line ending in CRLF within this feed: one append.
        if (special + 1 < end && special[0] == '\r' && special[1] == '\n') {
          sink.line(position, static_cast<std::size_t>(special - position), out);
          state = State::line_start;
          return special + 2;
        }
        if (special != position) {
          sink.content(position, static_cast<std::size_t>(special - position), out);
          position = special;
          if (position == end) {
            return position;
          }
        }
        if (*position == '\r') {
          state = State::carriage_return;
        } else {
          sink.stray_byte(out);  // bare LF or NUL
        }
        ++position;
        break;
      }
      case State::carriage_return:
        if (*position == '\n') {
          sink.end_line(out);
          state = State::line_start;
          return position + 1;
        }
        sink.stray_byte(out);  // the CR was bare
        if (*position == '\r') {
          state = State::stray_carriage_return;
          ++position;
        } else {
          state = State::in_line;
        }
        break;
      case State::stray_carriage_return:
        // A CR that follows a bare CR never starts a line ending: "\r\r\n" is three
        // stray bytes, so "\r\r\n.\r\n" does not end the data. Stricter than reading
        // it as bare CR + CRLF, on purpose: no line end is ever found next to a bare CR,
        // where readers (Postfix 3.7 splits on LF) could disagree about the lines.
        sink.stray_byte(out);
        if (*position == '\n') {
          sink.stray_byte(out);
          state = State::in_line;
          ++position;
        } else if (*position == '\r') {
          ++position;
        } else {
          state = State::in_line;
        }
        break;
      default:
        return position;
    }
  }
  return position;
}

}  // namespace

DataReader::DataReader(const DataLimits& limits) { sink_.limits = limits; }

void DataReader::reset() {
  const DataLimits limits = sink_.limits;
  sink_ = detail::ContentSink{};
  sink_.limits = limits;
  state_ = State::line_start;
}

DataReader::Result DataReader::feed(std::string_view input, std::string& out) {
  if (state_ == State::done) {
    return Result{0, true};
  }
  const char* const begin = input.data();
  const char* const end = begin + input.size();
  const char* position = begin;
  while (position < end) {
    switch (state_) {
      case State::line_start:
        if (*position == '.') {
          state_ = State::dot;
          ++position;
        } else {
          state_ = State::in_line;
        }
        break;
      case State::dot:
        if (*position == '\r') {
          state_ = State::dot_carriage_return;
          ++position;
        } else {
          state_ = State::in_line;  // RFC 5321 4.5.2: the leading dot is dropped
        }
        break;
      case State::dot_carriage_return:
        if (*position == '\n') {
          // RFC 5321 4.1.1.4: CRLF "." CRLF, the first CRLF ending the previous line
          // (or the 354 reply, for an empty message).
          state_ = State::done;
          sink_.flush(out);
          return Result{static_cast<std::size_t>(position + 1 - begin), true};
        }
        // ".\r" then not LF: a stuffed line with a bare CR.
        state_ = State::carriage_return;
        break;
      case State::done:  // not reached: the marker returns at once
        sink_.flush(out);
        return Result{static_cast<std::size_t>(position - begin), true};
      default:
        position = scan_line_body(state_, position, end, sink_, out);
        break;
    }
  }
  sink_.flush(out);
  return Result{input.size(), false};
}

ChunkReader::ChunkReader(const DataLimits& limits) { sink_.limits = limits; }

void ChunkReader::reset() {
  const DataLimits limits = sink_.limits;
  sink_ = detail::ContentSink{};
  sink_.limits = limits;
  state_ = DataReader::State::line_start;
}

void ChunkReader::feed(std::string_view chunk, std::string& out) {
  const char* position = chunk.data();
  const char* const end = position + chunk.size();
  while (position < end) {
    if (state_ == State::line_start) {
      state_ = State::in_line;  // RFC 3030 2: BDAT content is not dot-stuffed
    }
    position = scan_line_body(state_, position, end, sink_, out);
  }
  sink_.flush(out);
}

void ChunkReader::finish(std::string& out) {
  if (state_ == State::carriage_return || state_ == State::stray_carriage_return) {
    sink_.stray_byte(out);  // a CR with nothing after it is bare
    state_ = State::in_line;
  }
  // RFC 3030 3 wants canonical content; a last line without CRLF is completed rather
  // than refused, as Postfix does with a message that does not end in a newline.
  if (sink_.line_length > 0) {
    sink_.end_line(out);
  }
  state_ = State::line_start;
}

void stuff_for_data(std::string_view content, std::string& out) {
  const char* const data = content.data();
  const std::size_t size = content.size();
  out.reserve(out.size() + size + 5);
  // Copies runs of lines at once, breaking them only where a line starts with '.'.
  // RFC 5321 4.5.2. Lines are taken to start after every LF, not only after CRLF, so
  // that even a non-canonical content cannot give the backend an unstuffed dot line.
  std::size_t run_start = 0;
  std::size_t line_start = 0;
  while (line_start < size) {
    if (data[line_start] == '.') {
      out.append(data + run_start, line_start - run_start);
      out.push_back('.');
      run_start = line_start;
    }
    const void* newline = std::memchr(data + line_start, '\n', size - line_start);
    if (newline == nullptr) {
      break;
    }
    line_start = static_cast<std::size_t>(static_cast<const char*>(newline) - data) + 1;
  }
  out.append(data + run_start, size - run_start);
  if (size > 0 && !content.ends_with("\r\n")) {
    out.append("\r\n", 2);
  }
  out.append(".\r\n", 3);
}

}  // namespace mxgate::smtp
