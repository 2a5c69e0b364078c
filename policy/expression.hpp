// Composite content rules: boolean and counting expressions over other rules' hits
// ("A && (B || !C)", "A + B + C >= 2"). Pure: parsed by the loader to report errors with
// file:line, compiled once per policy generation by filters/content, fuzzed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::policy {

// Grammar, with C's precedence (lowest first); every value is an integer, a rule name
// is 1 when that rule hit and 0 otherwise, a comparison or logical operator gives 0/1:
//   or         := and ( ( "||" | "or" ) and )*
//   and        := equality ( ( "&&" | "and" ) equality )*
//   equality   := relation ( ( "==" | "!=" ) relation )*
//   relation   := sum ( ( "<" | "<=" | ">" | ">=" ) sum )*
//   sum        := unary ( "+" unary )*
//   unary      := ( "!" | "not" ) unary | primary
//   primary    := NUMBER | NAME | "(" or ")"
// NAME is a rule name ([A-Za-z0-9._:-]+, not all digits). There is no binary minus:
// '-' is part of rule names ("advance-fee").
class Expression {
 public:
  // Parses `text`; on failure returns nullopt and sets `error` ("column 7: expected
  // ')'"). Bounded: at most 4096 characters and 64 levels of nesting.
  static std::optional<Expression> parse(std::string_view text, std::string& error);

  // The rule names it refers to, each once, in order of first appearance.
  const std::vector<std::string>& names() const { return names_; }

  // `hit(i)` says whether names()[i] hit. Never fails (integer overflow saturates).
  bool evaluate(const std::function<bool(std::size_t)>& hit) const;
  // As evaluate(), with the hits as a vector indexed like names().
  bool evaluate(const std::vector<bool>& hits) const;

  // A canonical fully parenthesised form, for tests and logs.
  std::string to_string() const;

  enum class Op : std::uint8_t {
    number,
    name,
    not_,
    plus,
    less,
    less_equal,
    greater,
    greater_equal,
    equal,
    not_equal,
    and_,
    or_
  };
  struct Node {
    Op op;
    std::int64_t value = 0;  // number: the literal; name: index into names_
    std::int32_t left = -1;  // child node indices
    std::int32_t right = -1;
  };

 private:
  std::int64_t value_of(std::int32_t node, const std::function<bool(std::size_t)>& hit) const;
  std::string text_of(std::int32_t node) const;

  std::vector<Node> nodes_;
  std::int32_t root_ = -1;
  std::vector<std::string> names_;
  friend class ExpressionParser;
};

}  // namespace mxgate::policy
