//! A tiny evaluator for the subset of CEL used by `x-kubernetes-validations` rules in
//! simple CRDs and by ValidatingAdmissionPolicies: literals, variables and field access,
//! `has()`, `size()`, comparisons, `&&`, `||`, `!`, `? :`, list literals, `.matches()`,
//! `.startsWith()`, `.endsWith()`, `.contains()`, `.size()` and the
//! `filter`/`all`/`exists`/`exists_one` macros. Anything else is reported as
//! [`CelError::Unsupported`] and the caller skips the expression (never a false
//! rejection). Errors real CEL raises too (a missing field, an index out of range) are
//! [`CelError::Runtime`]: an admission policy's `failurePolicy` decides about those.

use std::collections::HashMap;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
}

/// The tokens of `src`, each with the index of its first character.
fn lex(src: &str) -> Option<Vec<(Tok, usize)>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    const PUNCT: &[&str] = &[
        "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", ",", ".", "!", "<", ">", "-", "+",
        "?", ":",
    ];
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let q = c;
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != q {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                    match chars[i] {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        other if other == q || other == '\\' => s.push(other),
                        // keep regex escapes like \d intact
                        other => {
                            s.push('\\');
                            s.push(other);
                        }
                    }
                } else {
                    s.push(chars[i]);
                }
                i += 1;
            }
            if i >= chars.len() {
                return None;
            }
            i += 1;
            out.push((Tok::Str(s), start));
        } else if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            out.push((Tok::Int(n.parse().ok()?), start));
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let p = PUNCT.iter().find(|p| rest.starts_with(**p))?;
            out.push((Tok::Punct(p), start));
            i += p.len();
        }
    }
    Some(out)
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Var(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str) -> Option<()> {
        self.eat(p).then_some(())
    }
    fn expr(&mut self) -> Option<Expr> {
        let c = self.or()?;
        if !self.eat("?") {
            return Some(c);
        }
        let then = self.or()?;
        self.expect(":")?;
        let other = self.expr()?;
        Some(Expr::Cond(Box::new(c), Box::new(then), Box::new(other)))
    }
    fn or(&mut self) -> Option<Expr> {
        let mut l = self.and()?;
        while self.eat("||") {
            l = Expr::Bin("||", Box::new(l), Box::new(self.and()?));
        }
        Some(l)
    }
    fn and(&mut self) -> Option<Expr> {
        let mut l = self.cmp()?;
        while self.eat("&&") {
            l = Expr::Bin("&&", Box::new(l), Box::new(self.cmp()?));
        }
        Some(l)
    }
    fn cmp(&mut self) -> Option<Expr> {
        let l = self.add()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat(op) {
                return Some(Expr::Bin(op, Box::new(l), Box::new(self.add()?)));
            }
        }
        if matches!(self.peek(), Some(Tok::Ident(i)) if i == "in") {
            self.pos += 1;
            return Some(Expr::Bin("in", Box::new(l), Box::new(self.add()?)));
        }
        Some(l)
    }
    fn add(&mut self) -> Option<Expr> {
        let mut l = self.unary()?;
        loop {
            if self.eat("+") {
                l = Expr::Bin("+", Box::new(l), Box::new(self.unary()?));
            } else if self.eat("-") {
                l = Expr::Bin("-", Box::new(l), Box::new(self.unary()?));
            } else {
                return Some(l);
            }
        }
    }
    fn unary(&mut self) -> Option<Expr> {
        if self.eat("!") {
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Some(Expr::Neg(Box::new(self.unary()?)));
        }
        self.postfix()
    }
    fn args(&mut self, close: &str) -> Option<Vec<Expr>> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Some(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Some(args);
            }
            self.expect(",")?;
        }
    }
    fn postfix(&mut self) -> Option<Expr> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return None;
                };
                self.pos += 1;
                if self.eat("(") {
                    e = Expr::Call(Some(Box::new(e)), name, self.args(")")?);
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat("[") {
                let idx = self.expr()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Some(e);
            }
        }
    }
    fn primary(&mut self) -> Option<Expr> {
        let t = self.peek()?.clone();
        self.pos += 1;
        match t {
            Tok::Str(s) => Some(Expr::Lit(json!(s))),
            Tok::Int(n) => Some(Expr::Lit(json!(n))),
            Tok::Ident(i) => match i.as_str() {
                "true" => Some(Expr::Lit(json!(true))),
                "false" => Some(Expr::Lit(json!(false))),
                "null" => Some(Expr::Lit(Value::Null)),
                _ if self.eat("(") => Some(Expr::Call(None, i, self.args(")")?)),
                _ => Some(Expr::Var(i)),
            },
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Some(e)
            }
            Tok::Punct("[") => Some(Expr::List(self.args("]")?)),
            Tok::Punct(_) => None,
        }
    }
}

/// Why an expression gave no value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CelError {
    /// Outside the subset (syntax, functions, types it does not model): skip the
    /// expression, a real server might well accept it.
    Unsupported,
    /// An error real CEL raises as well: a missing field or key, an index out of range.
    Runtime(String),
}

use CelError::{Runtime, Unsupported};

type R = Result<Value, CelError>;

/// Of two errors, the one to report: an unsupported part might have decided the result.
fn worse(a: CelError, b: CelError) -> CelError {
    if a == Unsupported { a } else { b }
}

fn size(v: &Value) -> R {
    Ok(json!(match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => return Err(Unsupported),
    }))
}

fn truthy(v: &Value) -> Result<bool, CelError> {
    v.as_bool().ok_or(Unsupported)
}

fn num(v: &Value) -> Result<f64, CelError> {
    v.as_f64().ok_or(Unsupported)
}

fn int(v: &Value) -> Result<i64, CelError> {
    v.as_i64().ok_or(Unsupported)
}

fn no_such_key(k: &str) -> CelError {
    Runtime(format!("no such key: {k}"))
}

/// Field `f` of `v`; a missing field is an error, as in CEL.
fn select(v: &Value, f: &str) -> R {
    match v {
        Value::Object(m) => m.get(f).cloned().ok_or_else(|| no_such_key(f)),
        Value::Null => Err(no_such_key(f)),
        _ => Err(Unsupported),
    }
}

/// `&&` and `||` are commutative in CEL: a deciding operand wins over an error in the other.
fn logic(or: bool, l: R, r: impl FnOnce() -> R) -> R {
    let l = l.and_then(|v| truthy(&v));
    if l == Ok(or) {
        return Ok(json!(or));
    }
    match (l, r().and_then(|v| truthy(&v))) {
        (_, Ok(b)) if b == or => Ok(json!(or)),
        (Ok(_), Ok(_)) => Ok(json!(!or)),
        (Err(a), Err(b)) => Err(worse(a, b)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// What an expression sees: named values (`self`, `object`, `request`, ...) and the
/// admission policy variables (`variables.NAME`). A variable keeps its error, so only
/// the expressions that use it fail, as with the real server's lazy variables.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activation {
    vars: HashMap<String, Value>,
    variables: HashMap<String, Result<Value, CelError>>,
}

impl Activation {
    /// Binds `name` to `value`.
    pub fn bind(mut self, name: &str, value: Value) -> Self {
        self.vars.insert(name.to_owned(), value);
        self
    }

    /// Evaluates `expression` as `variables.NAME` for the expressions that follow.
    pub fn define(&mut self, name: &str, expression: &str) {
        let v = evaluate(expression, self);
        self.variables.insert(name.to_owned(), v);
    }
}

fn eval(e: &Expr, env: &Activation) -> R {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Var(n) => env.vars.get(n).cloned().ok_or(Unsupported),
        Expr::Select(base, f) => match base.as_ref() {
            Expr::Var(v) if v == "variables" && !env.vars.contains_key(v) => {
                // an undefined variable fails to compile on a real server: not modelled
                env.variables.get(f).cloned().unwrap_or(Err(Unsupported))
            }
            _ => select(&eval(base, env)?, f),
        },
        Expr::Index(base, idx) => {
            let b = eval(base, env)?;
            let i = eval(idx, env)?;
            match (&b, &i) {
                (Value::Array(a), Value::Number(n)) => {
                    let n = n.as_i64().ok_or(Unsupported)?;
                    usize::try_from(n)
                        .ok()
                        .and_then(|n| a.get(n))
                        .cloned()
                        .ok_or_else(|| Runtime(format!("index out of bounds: {n}")))
                }
                (Value::Object(m), Value::String(k)) => {
                    m.get(k).cloned().ok_or_else(|| no_such_key(k))
                }
                (Value::Null, _) => Err(Runtime("no such key".into())),
                _ => Err(Unsupported),
            }
        }
        Expr::List(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Not(x) => Ok(json!(!truthy(&eval(x, env)?)?)),
        Expr::Neg(x) => Ok(json!(-int(&eval(x, env)?)?)),
        Expr::Cond(c, then, other) => {
            if truthy(&eval(c, env)?)? {
                eval(then, env)
            } else {
                eval(other, env)
            }
        }
        Expr::Bin(op, l, r) => {
            if *op == "&&" || *op == "||" {
                return logic(*op == "||", eval(l, env), || eval(r, env));
            }
            let (a, b) = (eval(l, env)?, eval(r, env)?);
            Ok(match *op {
                "==" => json!(eq(&a, &b)),
                "!=" => json!(!eq(&a, &b)),
                "<" => json!(num(&a)? < num(&b)?),
                "<=" => json!(num(&a)? <= num(&b)?),
                ">" => json!(num(&a)? > num(&b)?),
                ">=" => json!(num(&a)? >= num(&b)?),
                "in" => match &b {
                    Value::Array(items) => json!(items.iter().any(|i| eq(i, &a))),
                    Value::Object(m) => json!(a.as_str().is_some_and(|k| m.contains_key(k))),
                    _ => return Err(Unsupported),
                },
                "+" => match (&a, &b) {
                    (Value::String(x), Value::String(y)) => json!(format!("{x}{y}")),
                    _ => json!(int(&a)?.checked_add(int(&b)?).ok_or(Unsupported)?),
                },
                "-" => json!(int(&a)?.checked_sub(int(&b)?).ok_or(Unsupported)?),
                _ => return Err(Unsupported),
            })
        }
        Expr::Call(None, f, args) => match (f.as_str(), args.as_slice()) {
            ("has", [Expr::Select(base, field)]) => match eval(base, env)? {
                Value::Object(m) => Ok(json!(m.get(field).is_some_and(|v| !v.is_null()))),
                Value::Null => Err(no_such_key(field)),
                _ => Err(Unsupported),
            },
            ("size", [x]) => size(&eval(x, env)?),
            _ => Err(Unsupported),
        },
        Expr::Call(Some(target), m, args) => {
            if matches!(m.as_str(), "filter" | "all" | "exists" | "exists_one") {
                return comprehension(m, target, args, env);
            }
            let t = eval(target, env)?;
            let a: Vec<Value> = args
                .iter()
                .map(|x| eval(x, env))
                .collect::<Result<_, _>>()?;
            match (m.as_str(), &t, a.as_slice()) {
                ("size", _, []) => size(&t),
                ("matches", Value::String(s), [Value::String(re)]) => {
                    let re = regex_lite::Regex::new(re).map_err(|_| Unsupported)?;
                    Ok(json!(re.is_match(s)))
                }
                ("startsWith", Value::String(s), [Value::String(p)]) => {
                    Ok(json!(s.starts_with(p.as_str())))
                }
                ("endsWith", Value::String(s), [Value::String(p)]) => {
                    Ok(json!(s.ends_with(p.as_str())))
                }
                ("contains", Value::String(s), [Value::String(p)]) => {
                    Ok(json!(s.contains(p.as_str())))
                }
                _ => Err(Unsupported),
            }
        }
    }
}

/// The `filter`, `all`, `exists` and `exists_one` macros over a list or a map's keys.
/// `all` and `exists` are decided by one false (true) element even when others error.
fn comprehension(m: &str, target: &Expr, args: &[Expr], env: &Activation) -> R {
    let [Expr::Var(var), pred] = args else {
        return Err(Unsupported);
    };
    let items = match eval(target, env)? {
        Value::Array(a) => a,
        Value::Object(o) => o.keys().map(|k| json!(k)).collect(),
        _ => return Err(Unsupported),
    };
    let mut env2 = env.clone();
    let mut kept = Vec::new();
    let mut error = None;
    for it in items {
        env2.vars.insert(var.clone(), it.clone());
        match eval(pred, &env2).and_then(|v| truthy(&v)) {
            Ok(true) => kept.push(it),
            Ok(false) if m == "all" => return Ok(json!(false)),
            Ok(false) => {}
            Err(e) if m == "filter" || m == "exists_one" => return Err(e),
            Err(e) => error = Some(error.map_or(e.clone(), |p| worse(p, e))),
        }
    }
    match (m, error) {
        ("exists", _) if !kept.is_empty() => Ok(json!(true)),
        (_, Some(e)) => Err(e),
        ("filter", None) => Ok(Value::Array(kept)),
        ("all", None) => Ok(json!(true)),
        ("exists", None) => Ok(json!(false)),
        (_, None) => Ok(json!(kept.len() == 1)),
    }
}

fn eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn parse(src: &str) -> Result<Expr, CelError> {
    let toks = lex(src).ok_or(Unsupported)?;
    let mut p = Parser {
        toks: toks.into_iter().map(|(t, _)| t).collect(),
        pos: 0,
    };
    let e = p.expr().ok_or(Unsupported)?;
    if p.pos != p.toks.len() {
        return Err(Unsupported);
    }
    Ok(e)
}

/// Evaluates `expression` over the named values of `activation`.
pub(crate) fn evaluate(expression: &str, activation: &Activation) -> R {
    eval(&parse(expression)?, activation)
}

/// Evaluate `rule` with `self` bound to `value`. `Ok(true)` = rule holds.
pub(crate) fn check_rule(rule: &str, value: &Value) -> Result<bool, CelError> {
    if rule.contains("oldSelf") {
        return Err(Unsupported);
    }
    truthy(&evaluate(
        rule,
        &Activation::default().bind("self", value.clone()),
    )?)
}

/// The fields of `self.metadata` (or `oldSelf.metadata`) a rule selects other than `name`
/// and `generateName`, each with the line and column (1-based) of the `.` before it, as a
/// CEL compiler reports it. At the root of a CRD's schema metadata exposes only those two.
pub(crate) fn hidden_metadata_fields(rule: &str) -> Vec<(String, usize, usize)> {
    let Some(toks) = lex(rule) else {
        return Vec::new();
    };
    let chars: Vec<char> = rule.chars().collect();
    let mut out = Vec::new();
    for (i, w) in toks.windows(5).enumerate() {
        let [
            (Tok::Ident(root), _),
            (Tok::Punct("."), _),
            (Tok::Ident(meta), _),
            (Tok::Punct("."), dot),
            (Tok::Ident(field), _),
        ] = w
        else {
            continue;
        };
        // `self.metadata.all(...)` calls a macro on metadata rather than selecting a field
        let call = matches!(toks.get(i + 5), Some((Tok::Punct("("), _)));
        if (root != "self" && root != "oldSelf")
            || meta != "metadata"
            || call
            || field == "name"
            || field == "generateName"
        {
            continue;
        }
        let before = &chars[..*dot];
        let line = 1 + before.iter().filter(|c| **c == '\n').count();
        let line_start = before.iter().rposition(|c| *c == '\n').map_or(0, |i| i + 1);
        out.push((field.clone(), line, dot - line_start + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secretsync_rules() {
        let ok = |r: &str, v: Value| check_rule(r, &v).unwrap();
        assert!(ok("self.matches('^[-._a-zA-Z0-9]+$')", json!("a.b-c")));
        assert!(!ok("self.matches('^[-._a-zA-Z0-9]+$')", json!("a/b")));
        assert!(ok(
            "self.matches('^(0|([0-9]+(ms|s|m|h))+)$')",
            json!("1h30m")
        ));
        assert!(!ok(
            "self.matches('^(0|([0-9]+(ms|s|m|h))+)$')",
            json!("soon")
        ));
        let one = "[has(self.env), has(self.file), has(self.vault), has(self.aws)].filter(x, x).size() == 1";
        assert!(ok(one, json!({"env": {}})));
        assert!(!ok(one, json!({"env": {}, "aws": {"region": "x"}})));
        assert!(!ok(one, json!({})));
        assert!(ok(
            "has(self.extract) != has(self.find)",
            json!({"find": {"name": "*"}})
        ));
        assert!(ok("self == 1 || self == 2", json!(2)));
        assert!(!ok("self == 1 || self == 2", json!(3)));
        assert!(ok(
            "self.startsWith('https://') || self.startsWith('http://')",
            json!("http://x")
        ));
        let data = "(has(self.data) && size(self.data) > 0) || (has(self.dataFrom) && size(self.dataFrom) > 0)";
        assert!(ok(data, json!({"data": [1]})));
        assert!(!ok(data, json!({"data": []})));
        assert!(check_rule("self.foo(1)", &json!(1)).is_err());
        assert!(check_rule("self == oldSelf", &json!(1)).is_err());
    }

    fn eval(expr: &str, obj: Value) -> Result<Value, CelError> {
        evaluate(expr, &Activation::default().bind("object", obj))
    }

    #[test]
    fn errors_real_cel_raises_are_runtime_errors() {
        let obj = json!({"spec": {"list": [1], "map": {"a": 1}}, "nothing": null});
        let runtime = |e: &str| matches!(eval(e, obj.clone()), Err(CelError::Runtime(_)));
        assert!(runtime("object.spec.missing == 1"));
        assert!(runtime("object.spec.list[3] == 1"));
        assert!(runtime("object.spec.map['b'] == 1"));
        assert!(runtime("has(object.missing.x)"));
        assert!(runtime("object.nothing.x == 1"));
        assert_eq!(
            eval("object.spec.missing == 1", obj.clone()),
            Err(CelError::Runtime("no such key: missing".into()))
        );
        let unsupported = |e: &str| eval(e, obj.clone()) == Err(CelError::Unsupported);
        assert!(unsupported("object.spec.list.lowerAscii()"));
        assert!(unsupported("other == 1"));
        assert!(
            unsupported("object.spec.map.a.b == 1"),
            "a field of a number"
        );
        assert!(unsupported("{'a': 1}"));
    }

    #[test]
    fn logic_is_commutative_as_in_cel() {
        let obj = json!({"spec": {}});
        let v = |e: &str| eval(e, obj.clone());
        assert_eq!(v("object.spec.missing == 1 || true"), Ok(json!(true)));
        assert_eq!(v("true || object.spec.missing == 1"), Ok(json!(true)));
        assert_eq!(v("object.spec.missing == 1 && false"), Ok(json!(false)));
        assert!(matches!(
            v("object.spec.missing == 1 && true"),
            Err(CelError::Runtime(_))
        ));
        assert_eq!(
            v("object.spec.missing == 1 || object.spec.f()"),
            Err(CelError::Unsupported),
            "an unsupported operand might have decided"
        );
        assert_eq!(v("[1, 2].all(x, x > 1)"), Ok(json!(false)));
        assert_eq!(v("[1, 2].exists(x, x > 1)"), Ok(json!(true)));
        assert_eq!(v("[1, 2].exists_one(x, x > 0)"), Ok(json!(false)));
        assert_eq!(v("true ? 'a' : 'b'"), Ok(json!("a")));
        assert_eq!(v("1 > 2 ? 'a' : 2 > 1 ? 'b' : 'c'"), Ok(json!("b")));
    }

    #[test]
    fn variables_keep_their_errors() {
        let mut a = Activation::default().bind("object", json!({"spec": {"n": 2}}));
        a.define("n", "object.spec.n");
        a.define("double", "variables.n + variables.n");
        a.define("broken", "object.spec.missing");
        assert_eq!(evaluate("variables.double == 4", &a), Ok(json!(true)));
        assert!(matches!(
            evaluate("variables.broken == 1", &a),
            Err(CelError::Runtime(_))
        ));
        assert_eq!(evaluate("variables.none", &a), Err(CelError::Unsupported));
    }

    #[test]
    fn hidden_metadata_fields_are_found_with_their_position() {
        assert_eq!(
            hidden_metadata_fields("self.metadata.namespace == 'x'"),
            [("namespace".to_owned(), 1, 14)]
        );
        assert_eq!(
            hidden_metadata_fields(
                "size(self.metadata.namespace + '/' + self.metadata.name) <= 255"
            ),
            [("namespace".to_owned(), 1, 19)]
        );
        assert_eq!(
            hidden_metadata_fields("self.spec.x == 1 &&\n  has(oldSelf.metadata.labels)"),
            [("labels".to_owned(), 2, 23)]
        );
        for fine in [
            "self.metadata.name == 'x'",
            "self.metadata.generateName.startsWith('a')",
            "self.spec.metadata.namespace == 'x'",
            "'self.metadata.namespace' == self.spec.x",
        ] {
            assert!(hidden_metadata_fields(fine).is_empty(), "{fine}");
        }
    }
}
