// BeautifulSoup(text, features="html.parser").text (see caption_parts.h): Python's
// html.parser.HTMLParser as BeautifulSoup 4.15 drives it (convert_charrefs off, fed the whole
// text, then closed), its events turned into strings as BeautifulSoup's tree builder turns them:
// data gathered until the next event, a run of ASCII whitespace collapsed to one space or
// newline, each string typed by where it stands (script, style, template, rt and rp hold their
// own kinds; comments, declarations and processing instructions are theirs), and .text the
// strings of kinds NavigableString and CData in document order. The tree itself is not built:
// strings are only ever appended at the end of the document, so their order is the order of the
// events, and what decides a string's kind is the stack of open tags.
#include <algorithm>
#include <array>
#include <optional>

#include "core/error.h"
#include "pipeline/caption/caption_parts.h"

namespace pab::caption {

namespace {

#include "pipeline/caption/html_parser_table.inc"

using pyre::Match;
using pyre::Regex;

int flags(bool verbose) {
  return verbose ? pyre::kVerbose : 0;
}

struct Patterns {
  Regex interesting_normal{kInterestingNormal, flags(kInterestingNormalVerbose)};
  Regex incomplete{kIncomplete, flags(kIncompleteVerbose)};
  Regex entityref{kEntityRef, flags(kEntityRefVerbose)};
  Regex charref{kCharRef, flags(kCharRefVerbose)};
  Regex starttagopen{kStartTagOpen, flags(kStartTagOpenVerbose)};
  Regex piclose{kPiClose, flags(kPiCloseVerbose)};
  Regex tagfind_tolerant{kTagFindTolerant, flags(kTagFindTolerantVerbose)};
  Regex attrfind_tolerant{kAttrFindTolerant, flags(kAttrFindTolerantVerbose)};
  Regex locatestarttagend_tolerant{kLocateStartTagEndTolerant, flags(kLocateStartTagEndTolerantVerbose)};
  Regex endendtag{kEndEndTag, flags(kEndEndTagVerbose)};
  Regex endtagfind{kEndTagFind, flags(kEndTagFindVerbose)};
  Regex declname{kDeclName, flags(kDeclNameVerbose)};
  Regex commentclose{kCommentClose, flags(kCommentCloseVerbose)};
  Regex markedsectionclose{kMarkedSectionClose, flags(kMarkedSectionCloseVerbose)};
  Regex msmarkedsectionclose{kMsMarkedSectionClose, flags(kMsMarkedSectionCloseVerbose)};
  // HTMLParser.set_cdata_mode: r'</\s*%s\s*>' % elem, re.I.
  Regex script_end{U"</\\s*script\\s*>", pyre::kIgnoreCase};
  Regex style_end{U"</\\s*style\\s*>", pyre::kIgnoreCase};
};

const Patterns& patterns() {
  static const Patterns p;
  return p;
}

// The kinds of BeautifulSoup strings; .text keeps kNavigable and kCData.
enum class Kind { kNavigable, kCData, kComment, kDeclaration, kDoctype, kProcessingInstruction, kContained };

bool in(const Text& name, std::initializer_list<std::u32string_view> names) {
  return std::find(names.begin(), names.end(), std::u32string_view(name)) != names.end();
}

// BeautifulSoup's side: HTMLParserTreeBuilder's handlers and the BeautifulSoup object's
// string handling (endData, pushTag, popTag, _popToTag).
class SoupBuilder {
 public:
  void handle_data(const Text& data) {
    pending_ += data;
    has_pending_ = true;  // a list of strings, truthy even when they are all empty
  }

  void end_data(Kind kind = Kind::kNavigable) {
    if (!has_pending_) return;
    Text data = std::move(pending_);
    pending_.clear();
    has_pending_ = false;
    if (preserve_whitespace_ == 0 && std::all_of(data.begin(), data.end(), [](char32_t c) {
          return c == ' ' || c == '\n' || c == '\t' || c == '\f' || c == '\r';
        })) {
      data = data.find(U'\n') != Text::npos ? U"\n" : U" ";
    }
    // string_container: a plain string inside script, style, template, rt or rp takes that
    // tag's kind.
    if (kind == Kind::kNavigable && containers_ > 0) kind = Kind::kContained;
    if (kind == Kind::kNavigable || kind == Kind::kCData) text_ += data;
  }

  void start_tag(const Text& name, bool handle_empty_element) {
    end_data();
    open_.push_back(name);
    if (is_preserve_whitespace(name)) ++preserve_whitespace_;
    if (is_container(name)) ++containers_;
    if (handle_empty_element && is_empty_element(name)) {
      // html.parser sends no end event for a void element: BeautifulSoup closes it now and
      // ignores one later </name>.
      end_tag(name, false);
      already_closed_.push_back(name);
    }
  }

  void end_tag(const Text& name, bool check_already_closed) {
    if (check_already_closed) {
      const auto it = std::find(already_closed_.begin(), already_closed_.end(), name);
      if (it != already_closed_.end()) {
        already_closed_.erase(it);
        return;
      }
    }
    end_data();
    // _popToTag: pop up to and including the innermost open tag of that name, if one is open.
    if (std::find(open_.begin(), open_.end(), name) == open_.end()) return;
    for (;;) {
      const Text top = open_.back();
      pop();
      if (top == name) break;
    }
  }

  void charref(const Text& name) {
    // _dereference_numeric_character_reference: decimal, or hexadecimal after x or X.
    const bool hex = name[0] == 'x' || name[0] == 'X';
    uint64_t num = 0;
    for (size_t i = hex ? 1 : 0; i < name.size(); ++i) {
      const char32_t c = name[i];
      const uint64_t d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
      num = std::min<uint64_t>(num * (hex ? 16 : 10) + d, 0x110000);
    }
    handle_data(Text(1, soup_charref(num)));
    handle_data(Text());
  }

  void entityref(const Text& name) {
    if (auto v = html5_entity(name, true))
      handle_data(*v);
    else
      handle_data(U"&" + name);
  }

  void special(const Text& data, Kind kind) {
    end_data();
    handle_data(data);
    end_data(kind);
  }

  Text finish() {
    end_data();
    return std::move(text_);
  }

 private:
  static bool is_preserve_whitespace(const Text& n) { return in(n, {U"pre", U"textarea"}); }
  static bool is_container(const Text& n) { return in(n, {U"rt", U"rp", U"style", U"script", U"template"}); }
  static bool is_empty_element(const Text& n) {
    return in(n, {U"area",     U"base",    U"br",       U"col",   U"embed", U"hr",      U"img",    U"input",
                  U"keygen",   U"link",    U"menuitem", U"meta",  U"param", U"source",  U"track",  U"wbr",
                  U"basefont", U"bgsound", U"command",  U"frame", U"image", U"isindex", U"nextid", U"spacer"});
  }

  void pop() {
    const Text name = open_.back();
    open_.pop_back();
    // The innermost open tag of these kinds is always the one popped (BeautifulSoup's stacks).
    if (is_preserve_whitespace(name)) --preserve_whitespace_;
    if (is_container(name)) --containers_;
  }

  Text text_, pending_;
  bool has_pending_ = false;
  std::vector<Text> open_, already_closed_;
  int preserve_whitespace_ = 0, containers_ = 0;
};

struct Rejected {};  // ParserRejectedMarkup

// html.parser.HTMLParser with convert_charrefs=False, as BeautifulSoupHTMLParser subclasses it.
class HtmlParser {
 public:
  explicit HtmlParser(SoupBuilder* soup) : soup_(soup), p_(patterns()) {}

  void feed(const Text& data) {
    raw_ += data;
    goahead(false);
  }
  void close() { goahead(true); }

 private:
  bool starts(const char32_t* s, size_t i) const {
    for (size_t k = 0; s[k]; ++k)
      if (i + k >= raw_.size() || raw_[i + k] != s[k]) return false;
    return true;
  }
  ptrdiff_t find(char32_t c, size_t from) const {
    const size_t at = raw_.find(c, from);
    return at == Text::npos ? -1 : ptrdiff_t(at);
  }
  Text slice(size_t a, size_t b) const { return raw_.substr(a, b - a); }

  void goahead(bool end) {
    size_t i = 0;
    const size_t n = raw_.size();
    Match m;
    while (i < n) {
      size_t j;
      const Regex& interesting = !cdata_elem_                ? p_.interesting_normal
                                 : *cdata_elem_ == U"script" ? p_.script_end
                                                             : p_.style_end;
      if (interesting.search(raw_, i, &m)) {
        j = m.begin;
      } else {
        if (cdata_elem_) break;
        j = n;
      }
      if (i < j) soup_->handle_data(slice(i, j));
      i = j;
      if (i == n) break;
      if (raw_[i] == '<') {
        ptrdiff_t k;
        if (p_.starttagopen.match(raw_, i)) {
          k = parse_starttag(i);
        } else if (starts(U"</", i)) {
          k = parse_endtag(i);
        } else if (starts(U"<!--", i)) {
          k = parse_comment(i);
        } else if (starts(U"<?", i)) {
          k = parse_pi(i);
        } else if (starts(U"<!", i)) {
          k = parse_html_declaration(i);
        } else if (i + 1 < n) {
          soup_->handle_data(U"<");
          k = ptrdiff_t(i + 1);
        } else {
          break;
        }
        if (k < 0) {
          if (!end) break;
          k = find('>', i + 1);
          if (k < 0) {
            k = find('<', i + 1);
            if (k < 0) k = ptrdiff_t(i + 1);
          } else {
            k += 1;
          }
          soup_->handle_data(slice(i, size_t(k)));
        }
        i = size_t(k);
      } else if (starts(U"&#", i)) {
        if (p_.charref.match(raw_, i, &m)) {
          soup_->charref(slice(m.begin + 2, m.end - 1));
          size_t k = m.end;
          if (raw_[k - 1] != ';') k -= 1;
          i = k;
          continue;
        }
        if (raw_.find(U';', i) != Text::npos) {  // bail by consuming &#
          soup_->handle_data(slice(i, i + 2));
          i += 2;
        }
        break;
      } else if (raw_[i] == '&') {
        if (p_.entityref.match(raw_, i, &m)) {
          soup_->entityref(m.group(raw_, 1));
          size_t k = m.end;
          if (raw_[k - 1] != ';') k -= 1;
          i = k;
          continue;
        }
        if (p_.incomplete.match(raw_, i, &m)) {
          if (end && m.end == n) i += 1;  // the rest is just "&" and a letter or '#'
          break;
        }
        if (i + 1 < n) {
          soup_->handle_data(U"&");
          i += 1;
        } else {
          break;
        }
      } else {
        PAB_ASSERT(false, "interesting.search() lied");
      }
    }
    if (end && i < n && !cdata_elem_) {
      soup_->handle_data(slice(i, n));
      i = n;
    }
    raw_ = raw_.substr(i);
  }

  ptrdiff_t parse_html_declaration(size_t i) {
    if (starts(U"<!--", i)) return parse_comment(i);
    if (starts(U"<![", i)) return parse_marked_section(i);
    if (python_lower(raw_.substr(i, 9)) == U"<!doctype") {
      const ptrdiff_t gt = find('>', i + 9);
      if (gt < 0) return -1;
      Text decl = slice(i + 2, size_t(gt));
      // BeautifulSoupHTMLParser.handle_decl drops len("DOCTYPE ") characters.
      soup_->special(decl.size() > 8 ? decl.substr(8) : Text(), Kind::kDoctype);
      return gt + 1;
    }
    return parse_bogus_comment(i);
  }

  ptrdiff_t parse_bogus_comment(size_t i) {
    const ptrdiff_t pos = find('>', i + 2);
    if (pos < 0) return -1;
    soup_->special(slice(i + 2, size_t(pos)), Kind::kComment);
    return pos + 1;
  }

  ptrdiff_t parse_pi(size_t i) {
    Match m;
    if (!p_.piclose.search(raw_, i + 2, &m)) return -1;
    soup_->special(slice(i + 2, m.begin), Kind::kProcessingInstruction);
    return ptrdiff_t(m.end);
  }

  ptrdiff_t parse_comment(size_t i) {
    Match m;
    if (!p_.commentclose.search(raw_, i + 4, &m)) return -1;
    soup_->special(slice(i + 4, m.begin), Kind::kComment);
    return ptrdiff_t(m.end);
  }

  // _markupbase.ParserBase._scan_name: the lowered name and the position after it, or -1 at
  // the end of the buffer; html.parser raises where no name starts.
  ptrdiff_t scan_name(size_t i, Text* name) {
    if (i == raw_.size()) return -1;
    Match m;
    if (!p_.declname.match(raw_, i, &m)) throw Rejected{};
    if (m.end == raw_.size()) return -1;
    *name = python_lower(python_strip(slice(m.begin, m.end)));
    return ptrdiff_t(m.end);
  }

  ptrdiff_t parse_marked_section(size_t i) {
    Text name;
    const ptrdiff_t j = scan_name(i + 3, &name);
    if (j < 0) return j;
    Match m;
    bool found;
    if (in(name, {U"temp", U"cdata", U"ignore", U"include", U"rcdata"})) {
      found = p_.markedsectionclose.search(raw_, i + 3, &m);
    } else if (in(name, {U"if", U"else", U"endif"})) {
      found = p_.msmarkedsectionclose.search(raw_, i + 3, &m);
    } else {
      throw Rejected{};  // "unknown status keyword in marked section"
    }
    if (!found) return -1;
    const Text data = slice(i + 3, m.begin);
    // BeautifulSoupHTMLParser.unknown_decl: CDATA when data.upper() starts with "CDATA["; the
    // name before it is ASCII, and no other character upper-cases to '['.
    const auto is = [&](size_t k, char32_t c) { return k < data.size() && (data[k] | 0x20) == c; };
    if (is(0, 'c') && is(1, 'd') && is(2, 'a') && is(3, 't') && is(4, 'a') && data.size() > 5 && data[5] == '[')
      soup_->special(data.substr(6), Kind::kCData);
    else
      soup_->special(data, Kind::kDeclaration);
    return ptrdiff_t(m.end);
  }

  // HTMLParser.check_for_whole_start_tag.
  ptrdiff_t check_for_whole_start_tag(size_t i) {
    Match m;
    PAB_ASSERT(p_.locatestarttagend_tolerant.match(raw_, i, &m), "we should not get here!");
    const size_t j = m.end;
    if (j == raw_.size()) return -1;
    const char32_t next = raw_[j];
    if (next == '>') return ptrdiff_t(j + 1);
    if (next == '/') return starts(U"/>", j) ? ptrdiff_t(j + 2) : -1;
    if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') || next == '=' || next == '/') return -1;
    return j > i ? ptrdiff_t(j) : ptrdiff_t(i + 1);
  }

  ptrdiff_t parse_starttag(size_t i) {
    const ptrdiff_t endpos = check_for_whole_start_tag(i);
    if (endpos < 0) return endpos;
    Match m;
    PAB_ASSERT(p_.tagfind_tolerant.match(raw_, i + 1, &m), "unexpected call to parse_starttag()");
    size_t k = m.end;
    const Text tag = python_lower(m.group(raw_, 1));
    while (k < size_t(endpos)) {
      if (!p_.attrfind_tolerant.match(raw_, k, &m)) break;
      k = m.end;
    }
    const Text rest = python_strip(slice(k, size_t(endpos)));
    if (rest != U">" && rest != U"/>") {
      soup_->handle_data(slice(i, size_t(endpos)));
      return endpos;
    }
    if (rest == U"/>") {
      // BeautifulSoupHTMLParser.handle_startendtag.
      soup_->start_tag(tag, false);
      soup_->end_tag(tag, false);
    } else {
      soup_->start_tag(tag, true);
      if (tag == U"script" || tag == U"style") cdata_elem_ = tag;
    }
    return endpos;
  }

  ptrdiff_t parse_endtag(size_t i) {
    Match m;
    if (!p_.endendtag.search(raw_, i + 1, &m)) return -1;
    const size_t gtpos = m.end;
    if (!p_.endtagfind.match(raw_, i, &m)) {
      if (cdata_elem_) {
        soup_->handle_data(slice(i, gtpos));
        return ptrdiff_t(gtpos);
      }
      if (!p_.tagfind_tolerant.match(raw_, i + 2, &m)) {
        if (starts(U"</>", i)) return ptrdiff_t(i + 3);
        return parse_bogus_comment(i);
      }
      const Text name = python_lower(m.group(raw_, 1));
      const ptrdiff_t gt = find('>', m.end);
      soup_->end_tag(name, true);
      return gt + 1;
    }
    const Text elem = python_lower(m.group(raw_, 1));
    if (cdata_elem_ && elem != *cdata_elem_) {
      soup_->handle_data(slice(i, gtpos));
      return ptrdiff_t(gtpos);
    }
    soup_->end_tag(elem, true);
    cdata_elem_.reset();
    return ptrdiff_t(gtpos);
  }

  SoupBuilder* soup_;
  const Patterns& p_;
  Text raw_;
  std::optional<Text> cdata_elem_;
};

}  // namespace

Text soup_text(const Text& text) {
  SoupBuilder soup;
  HtmlParser parser(&soup);
  try {
    parser.feed(text);
    parser.close();
  } catch (const Rejected&) {
    fail(
        "prompt text holds a \"<![\" section that BeautifulSoup's html.parser rejects (ParserRejectedMarkup), "
        "so the reference cleaner fails on it too");
  }
  return soup.finish();
}

}  // namespace pab::caption
