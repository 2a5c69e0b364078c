// Domain, address and rule-name validation, and typo suggestions for config keys and values.
#include "policy/names.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace mxgate::policy {
namespace {

std::string describe_character(char character) {
  const auto byte = static_cast<unsigned char>(character);
  if (byte < 0x20 || byte == 0x7f) {
    static constexpr char kHex[] = "0123456789abcdef";
    return std::string("\\x") + kHex[byte >> 4] + kHex[byte & 0xf];
  }
  return "'" + std::string(1, character) + "'";
}

}  // namespace

bool normalize_domain(std::string& domain, std::string& error) {
  const std::string original = domain;
  auto fail = [&](const std::string& reason) {
    error = "'" + original + "' is not a valid domain name: " + reason;
    return false;
  };
  std::string name = domain;
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty()) return fail("empty");
  if (name.size() > 253) return fail("longer than 253 characters");
  std::size_t label_start = 0;
  std::string last_label;
  for (std::size_t position = 0; position <= name.size(); ++position) {
    if (position < name.size() && name[position] != '.') {
      const char character = name[position];
      if (static_cast<unsigned char>(character) >= 0x80) {
        return fail("non-ASCII; write internationalised names in their xn-- form");
      }
      if (!std::isalnum(static_cast<unsigned char>(character)) && character != '-' &&
          character != '_') {
        return fail("invalid character " + describe_character(character));
      }
      continue;
    }
    const std::string label = name.substr(label_start, position - label_start);
    if (label.empty()) return fail("empty label");
    if (label.size() > 63) return fail("label longer than 63 characters");
    if (label.front() == '-' || label.back() == '-') return fail("label starts or ends with '-'");
    last_label = label;
    label_start = position + 1;
  }
  if (std::all_of(last_label.begin(), last_label.end(), [](char character) {
        return std::isdigit(static_cast<unsigned char>(character));
      })) {
    return fail("numeric top-level label (an IP address is not a domain)");
  }
  for (char& character : name) {
    character = static_cast<char>(std::tolower(static_cast<unsigned char>(character)));
  }
  domain = name;
  return true;
}

bool normalize_domain_entry(std::string& entry, std::string& error) {
  if (entry.empty() || entry.front() != '.') return normalize_domain(entry, error);
  std::string domain = entry.substr(1);
  if (!normalize_domain(domain, error)) {
    // Name the entry as written, dot included, with the reason found for the rest.
    constexpr std::string_view kReasonAfter = "is not a valid domain name";
    error = "'" + entry + "' " + error.substr(error.rfind(kReasonAfter));
    return false;
  }
  entry = "." + domain;
  return true;
}

bool valid_address_literal(std::string_view text, std::string& error) {
  const std::string quoted = "'" + std::string(text) + "'";
  if (text.size() < 2 || text.front() != '[' || text.back() != ']') {
    error = quoted + " is not an address literal (expected [192.0.2.1] or [IPv6:2001:db8::1])";
    return false;
  }
  std::string inside(text.substr(1, text.size() - 2));
  std::array<unsigned char, 16> bytes{};
  constexpr std::string_view kIpv6Tag = "ipv6:";
  std::string tag = inside.substr(0, kIpv6Tag.size());
  for (char& character : tag) {
    character = static_cast<char>(std::tolower(static_cast<unsigned char>(character)));
  }
  const bool valid = tag == kIpv6Tag
                         ? inet_pton(AF_INET6, inside.c_str() + kIpv6Tag.size(), bytes.data()) == 1
                         : inet_pton(AF_INET, inside.c_str(), bytes.data()) == 1;
  if (!valid) {
    error = quoted + " is not an address literal (expected [192.0.2.1] or [IPv6:2001:db8::1])";
    return false;
  }
  return true;
}

bool normalize_address(std::string& address, std::string& error) {
  if (address == "<>") return true;
  const std::size_t at = address.rfind('@');
  if (at == std::string::npos || at == 0) {
    error = "'" + address + "' is not a mail address (expected local@domain)";
    return false;
  }
  const std::string local = address.substr(0, at);
  for (char character : local) {
    const auto byte = static_cast<unsigned char>(character);
    if (byte <= 0x20 || byte == 0x7f) {
      error = "'" + address + "' is not a mail address: invalid character " +
              describe_character(character) + " in the local part";
      return false;
    }
  }
  std::string domain = address.substr(at + 1);
  std::string domain_error;
  if (!normalize_domain(domain, domain_error)) {
    error = "'" + address + "' is not a mail address: " + domain_error;
    return false;
  }
  address = local + "@" + domain;
  return true;
}

bool valid_rule_name(std::string_view name, std::string& error) {
  if (name.empty()) {
    error = "rule name is empty";
    return false;
  }
  if (name.size() > 64) {
    error = "rule name '" + std::string(name) + "' is longer than 64 characters";
    return false;
  }
  for (char character : name) {
    if (!std::isalnum(static_cast<unsigned char>(character)) && character != '.' &&
        character != '_' && character != ':' && character != '-') {
      error = "rule name '" + std::string(name) + "' has invalid character " +
              describe_character(character) + " (use letters, digits, '.', '_', ':', '-')";
      return false;
    }
  }
  return true;
}

std::size_t edit_distance(std::string_view first, std::string_view second) {
  const std::size_t rows = first.size() + 1;
  const std::size_t columns = second.size() + 1;
  std::vector<std::size_t> table(rows * columns);
  auto at = [&](std::size_t row, std::size_t column) -> std::size_t& {
    return table[row * columns + column];
  };
  for (std::size_t row = 0; row < rows; ++row) at(row, 0) = row;
  for (std::size_t column = 0; column < columns; ++column) at(0, column) = column;
  for (std::size_t row = 1; row < rows; ++row) {
    for (std::size_t column = 1; column < columns; ++column) {
      const std::size_t cost = first[row - 1] == second[column - 1] ? 0 : 1;
      std::size_t best = std::min(
          {at(row - 1, column) + 1, at(row, column - 1) + 1, at(row - 1, column - 1) + cost});
      if (row > 1 && column > 1 && first[row - 1] == second[column - 2] &&
          first[row - 2] == second[column - 1]) {
        best = std::min(best, at(row - 2, column - 2) + 1);
      }
      at(row, column) = best;
    }
  }
  return at(rows - 1, columns - 1);
}

std::optional<std::string> nearest_word(std::string_view word,
                                        const std::vector<std::string>& candidates) {
  // Two edits at most, and fewer than half the word: "foo" should not suggest "log".
  std::optional<std::string> best;
  std::size_t best_distance = 3;
  for (const std::string& candidate : candidates) {
    const std::size_t distance = edit_distance(word, candidate);
    if (distance < best_distance && distance * 2 < std::max(word.size(), candidate.size())) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string ascii_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace mxgate::policy
