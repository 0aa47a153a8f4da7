//! A tiny evaluator for the subset of CEL used by `x-kubernetes-validations` rules in
//! simple CRDs: literals, `self` field access, `has()`, `size()`, comparisons, `&&`, `||`,
//! `!`, list literals, `.matches()`, `.startsWith()`, `.endsWith()`, `.contains()`,
//! `.size()` and the `filter`/`all`/`exists`/`exists_one` macros. Anything else is
//! reported as unsupported and the rule is skipped (never a false rejection).

use std::collections::HashMap;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
}

fn lex(src: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    const PUNCT: &[&str] = &[
        "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", ",", ".", "!", "<", ">", "-", "+",
    ];
    while i < chars.len() {
        let c = chars[i];
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
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            out.push(Tok::Int(n.parse().ok()?));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let p = PUNCT.iter().find(|p| rest.starts_with(**p))?;
            out.push(Tok::Punct(p));
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

/// Why a rule could not be evaluated.
#[derive(Debug)]
pub(crate) struct Unsupported;

type R = Result<Value, Unsupported>;

fn size(v: &Value) -> R {
    Ok(json!(match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => return Err(Unsupported),
    }))
}

fn truthy(v: &Value) -> Result<bool, Unsupported> {
    v.as_bool().ok_or(Unsupported)
}

fn num(v: &Value) -> Result<f64, Unsupported> {
    v.as_f64().ok_or(Unsupported)
}

fn eval(e: &Expr, env: &HashMap<String, Value>) -> R {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Var(n) => env.get(n).cloned().ok_or(Unsupported),
        Expr::Select(base, f) => eval(base, env)?.get(f).cloned().ok_or(Unsupported),
        Expr::Index(base, idx) => {
            let b = eval(base, env)?;
            let i = eval(idx, env)?;
            match (&b, &i) {
                (Value::Array(a), Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| a.get(n as usize))
                    .cloned()
                    .ok_or(Unsupported),
                (Value::Object(m), Value::String(k)) => m.get(k).cloned().ok_or(Unsupported),
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
        Expr::Neg(x) => Ok(json!(-eval(x, env)?.as_i64().ok_or(Unsupported)?)),
        Expr::Bin(op, l, r) => {
            if *op == "&&" {
                return Ok(json!(truthy(&eval(l, env)?)? && truthy(&eval(r, env)?)?));
            }
            if *op == "||" {
                return Ok(json!(truthy(&eval(l, env)?)? || truthy(&eval(r, env)?)?));
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
                    _ => json!(a.as_i64().ok_or(Unsupported)? + b.as_i64().ok_or(Unsupported)?),
                },
                "-" => json!(a.as_i64().ok_or(Unsupported)? - b.as_i64().ok_or(Unsupported)?),
                _ => return Err(Unsupported),
            })
        }
        Expr::Call(None, f, args) => match (f.as_str(), args.as_slice()) {
            ("has", [Expr::Select(base, field)]) => {
                let b = eval(base, env)?;
                Ok(json!(b.get(field).is_some_and(|v| !v.is_null())))
            }
            ("size", [x]) => size(&eval(x, env)?),
            _ => Err(Unsupported),
        },
        Expr::Call(Some(target), m, args) => {
            if matches!(m.as_str(), "filter" | "all" | "exists" | "exists_one") {
                let [Expr::Var(var), pred] = args.as_slice() else {
                    return Err(Unsupported);
                };
                let items = match eval(target, env)? {
                    Value::Array(a) => a,
                    Value::Object(o) => o.keys().map(|k| json!(k)).collect(),
                    _ => return Err(Unsupported),
                };
                let mut env2 = env.clone();
                let mut kept = Vec::new();
                for it in items {
                    env2.insert(var.clone(), it.clone());
                    if truthy(&eval(pred, &env2)?)? {
                        kept.push(it);
                    }
                }
                let n = kept.len();
                return Ok(match m.as_str() {
                    "filter" => Value::Array(kept),
                    "all" => json!(n == size(&eval(target, env)?)?.as_u64().unwrap_or(0) as usize),
                    "exists" => json!(n > 0),
                    _ => json!(n == 1),
                });
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

fn eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Evaluate `rule` with `self` bound to `value`. `Ok(true)` = rule holds.
pub(crate) fn check_rule(rule: &str, value: &Value) -> Result<bool, Unsupported> {
    if rule.contains("oldSelf") {
        return Err(Unsupported);
    }
    let toks = lex(rule).ok_or(Unsupported)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr().ok_or(Unsupported)?;
    if p.pos != p.toks.len() {
        return Err(Unsupported);
    }
    let env = HashMap::from([("self".to_owned(), value.clone())]);
    truthy(&eval(&e, &env)?)
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
}
