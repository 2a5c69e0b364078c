// A recursive-descent parser and evaluator for composite content rules; errors name
// the column, so `mxgate check` can point at the typo inside the expression.
#include "policy/expression.hpp"

#include <algorithm>
#include <cctype>
#include <limits>

namespace mxgate::policy {

namespace {
constexpr std::size_t kMaxLength = 4096;
constexpr int kMaxDepth = 64;

bool name_character(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
         c == '-';
}

std::int64_t saturate(long double value) {
  constexpr auto high = std::numeric_limits<std::int64_t>::max();
  constexpr auto low = std::numeric_limits<std::int64_t>::min();
  if (value > static_cast<long double>(high)) return high;
  if (value < static_cast<long double>(low)) return low;
  return static_cast<std::int64_t>(value);
}
}  // namespace

class ExpressionParser {
 public:
  ExpressionParser(std::string_view text, Expression& out) : text_(text), out_(out) {}

  bool run(std::string& error) {
    if (text_.size() > kMaxLength) {
      error = "expression longer than " + std::to_string(kMaxLength) + " characters";
      return false;
    }
    const std::int32_t root = parse_or();
    if (root >= 0) {
      skip_space();
      if (position_ < text_.size()) fail("unexpected '" + token_text() + "'");
    }
    if (!error_.empty()) {
      error = "column " + std::to_string(error_column_ + 1) + ": " + error_;
      return false;
    }
    out_.root_ = root;
    return true;
  }

 private:
  using Op = Expression::Op;

  void skip_space() {
    while (position_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[position_])))
      ++position_;
  }

  void fail(std::string message) {
    if (!error_.empty()) return;
    error_ = std::move(message);
    error_column_ = position_;
  }

  std::string token_text() const {
    if (position_ >= text_.size()) return "end of expression";
    std::size_t end = position_;
    while (end < text_.size() && name_character(text_[end])) ++end;
    if (end == position_) end = position_ + 1;
    return std::string(text_.substr(position_, end - position_));
  }

  // Consumes `symbol` if it is next. Word operators ("and") must end at a non-name
  // character, or "andes" would read as "and es".
  bool accept(std::string_view symbol) {
    skip_space();
    if (text_.compare(position_, symbol.size(), symbol) != 0) return false;
    if (std::isalpha(static_cast<unsigned char>(symbol[0]))) {
      const std::size_t after = position_ + symbol.size();
      if (after < text_.size() && name_character(text_[after])) return false;
    }
    // "<" must not eat the first character of "<=", nor "!" of "!=".
    position_ += symbol.size();
    return true;
  }

  std::int32_t node(Op op, std::int32_t left, std::int32_t right, std::int64_t value = 0) {
    if (left < 0 && (op != Op::number && op != Op::name)) return -1;
    if (right < 0 && op != Op::number && op != Op::name && op != Op::not_) return -1;
    out_.nodes_.push_back({op, value, left, right});
    return static_cast<std::int32_t>(out_.nodes_.size() - 1);
  }

  template <typename Next>
  std::int32_t binary(Next next, std::initializer_list<std::pair<std::string_view, Op>> ops) {
    std::int32_t left = (this->*next)();
    while (left >= 0) {
      bool matched = false;
      for (const auto& [symbol, op] : ops) {
        const std::size_t saved = position_;
        if (!accept(symbol)) continue;
        // Longest operator first is guaranteed by the order in each table; "<" vs "<=".
        if ((symbol == "<" || symbol == ">") && position_ < text_.size() &&
            text_[position_] == '=') {
          position_ = saved;
          continue;
        }
        const std::int32_t right = (this->*next)();
        if (right < 0) return -1;
        left = node(op, left, right);
        matched = true;
        break;
      }
      if (!matched) break;
    }
    return left;
  }

  std::int32_t parse_or() {
    if (++depth_ > kMaxDepth) {
      fail("nested deeper than " + std::to_string(kMaxDepth) + " levels");
      return -1;
    }
    const std::int32_t result =
        binary(&ExpressionParser::parse_and, {{"||", Op::or_}, {"or", Op::or_}});
    --depth_;
    return result;
  }
  std::int32_t parse_and() {
    return binary(&ExpressionParser::parse_equality, {{"&&", Op::and_}, {"and", Op::and_}});
  }
  std::int32_t parse_equality() {
    return binary(&ExpressionParser::parse_relation, {{"==", Op::equal}, {"!=", Op::not_equal}});
  }
  std::int32_t parse_relation() {
    return binary(
        &ExpressionParser::parse_sum,
        {{"<=", Op::less_equal}, {">=", Op::greater_equal}, {"<", Op::less}, {">", Op::greater}});
  }
  std::int32_t parse_sum() { return binary(&ExpressionParser::parse_unary, {{"+", Op::plus}}); }

  std::int32_t parse_unary() {
    skip_space();
    const bool bang = position_ < text_.size() && text_[position_] == '!' &&
                      !(position_ + 1 < text_.size() && text_[position_ + 1] == '=');
    if (bang || accept("not")) {
      if (bang) ++position_;
      if (++depth_ > kMaxDepth) {
        fail("nested deeper than " + std::to_string(kMaxDepth) + " levels");
        return -1;
      }
      const std::int32_t operand = parse_unary();
      --depth_;
      return operand < 0 ? -1 : node(Op::not_, operand, -1);
    }
    return parse_primary();
  }

  std::int32_t parse_primary() {
    skip_space();
    if (position_ >= text_.size()) {
      fail("expected a rule name, a number or '(', found the end of the expression");
      return -1;
    }
    if (text_[position_] == '(') {
      ++position_;
      const std::int32_t inner = parse_or();
      if (inner < 0) return -1;
      skip_space();
      if (position_ >= text_.size() || text_[position_] != ')') {
        fail("expected ')', found " +
             (position_ >= text_.size() ? std::string("the end") : "'" + token_text() + "'"));
        return -1;
      }
      ++position_;
      return inner;
    }
    const std::size_t start = position_;
    while (position_ < text_.size() && name_character(text_[position_])) ++position_;
    const std::string_view word = text_.substr(start, position_ - start);
    if (word.empty()) {
      fail("expected a rule name, a number or '(', found '" + token_text() + "'");
      return -1;
    }
    if (std::all_of(word.begin(), word.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      if (word.size() > 9) {
        position_ = start;
        fail("number too large");
        return -1;
      }
      return node(Op::number, -1, -1, std::stoll(std::string(word)));
    }
    if (word == "and" || word == "or" || word == "not") {
      position_ = start;
      fail("expected a rule name, found the operator '" + std::string(word) + "'");
      return -1;
    }
    if (word.size() > 64) {
      position_ = start;
      fail("rule name longer than 64 characters");
      return -1;
    }
    auto& names = out_.names_;
    auto found = std::find(names.begin(), names.end(), word);
    const std::size_t index = static_cast<std::size_t>(found - names.begin());
    if (found == names.end()) names.emplace_back(word);
    return node(Op::name, -1, -1, static_cast<std::int64_t>(index));
  }

  std::string_view text_;
  Expression& out_;
  std::size_t position_ = 0;
  int depth_ = 0;
  std::string error_;
  std::size_t error_column_ = 0;
};

std::optional<Expression> Expression::parse(std::string_view text, std::string& error) {
  Expression expression;
  ExpressionParser parser(text, expression);
  if (!parser.run(error)) return std::nullopt;
  return expression;
}

std::int64_t Expression::value_of(std::int32_t index,
                                  const std::function<bool(std::size_t)>& hit) const {
  const Node& n = nodes_[static_cast<std::size_t>(index)];
  switch (n.op) {
    case Op::number:
      return n.value;
    case Op::name:
      return hit(static_cast<std::size_t>(n.value)) ? 1 : 0;
    case Op::not_:
      return value_of(n.left, hit) == 0 ? 1 : 0;
    case Op::and_:
      return (value_of(n.left, hit) != 0 && value_of(n.right, hit) != 0) ? 1 : 0;
    case Op::or_:
      return (value_of(n.left, hit) != 0 || value_of(n.right, hit) != 0) ? 1 : 0;
    default:
      break;
  }
  const std::int64_t left = value_of(n.left, hit);
  const std::int64_t right = value_of(n.right, hit);
  switch (n.op) {
    case Op::plus:
      return saturate(static_cast<long double>(left) + static_cast<long double>(right));
    case Op::less:
      return left < right;
    case Op::less_equal:
      return left <= right;
    case Op::greater:
      return left > right;
    case Op::greater_equal:
      return left >= right;
    case Op::equal:
      return left == right;
    case Op::not_equal:
      return left != right;
    default:
      return 0;
  }
}

bool Expression::evaluate(const std::function<bool(std::size_t)>& hit) const {
  return root_ >= 0 && value_of(root_, hit) != 0;
}

bool Expression::evaluate(const std::vector<bool>& hits) const {
  return evaluate([&](std::size_t index) { return index < hits.size() && hits[index]; });
}

std::string Expression::text_of(std::int32_t index) const {
  const Node& n = nodes_[static_cast<std::size_t>(index)];
  switch (n.op) {
    case Op::number:
      return std::to_string(n.value);
    case Op::name:
      return names_[static_cast<std::size_t>(n.value)];
    case Op::not_:
      return "!" + text_of(n.left);
    default:
      break;
  }
  const char* symbol = "?";
  switch (n.op) {
    case Op::plus:
      symbol = "+";
      break;
    case Op::less:
      symbol = "<";
      break;
    case Op::less_equal:
      symbol = "<=";
      break;
    case Op::greater:
      symbol = ">";
      break;
    case Op::greater_equal:
      symbol = ">=";
      break;
    case Op::equal:
      symbol = "==";
      break;
    case Op::not_equal:
      symbol = "!=";
      break;
    case Op::and_:
      symbol = "&&";
      break;
    case Op::or_:
      symbol = "||";
      break;
    default:
      break;
  }
  return "(" + text_of(n.left) + " " + symbol + " " + text_of(n.right) + ")";
}

std::string Expression::to_string() const { return root_ < 0 ? "" : text_of(root_); }

}  // namespace mxgate::policy
