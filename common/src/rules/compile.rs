//! A rule's CEL expression, parsed by the `cel` crate and compiled once into a typed tree that is
//! evaluated natively per transaction: no value boxing, no variable lookup by name. The subset
//! is what rules over one transaction need: arithmetic and comparisons on numbers, string
//! equality, `in` lists, `startsWith` / `endsWith` / `contains` / `size`, `&&`, `||`, `!` and
//! `? :`. Anything else is refused at load time with the reason, as is a name that is not a field.

use crate::features::FEATURE_NAMES;
use cel::common::ast::{operators as op, Expr, IdedExpr, LiteralValue};
use fraudstream_schemas::TransactionType;

/// What a rule can read of one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The model's features, in [`FEATURE_NAMES`] order.
    pub features: &'a [f64],
    /// The champion's score.
    pub score: f64,
    pub tx_type: TransactionType,
    pub name_orig: &'a str,
    pub name_dest: &'a str,
    pub is_flagged_fraud: bool,
}

/// The names a rule may use besides the features: (name, type).
pub const FIELDS: [(&str, &str); 6] = [
    ("score", "number: the model's score"),
    (
        "type",
        "string: PAYMENT, TRANSFER, CASH_OUT, DEBIT or CASH_IN",
    ),
    ("tx_type", "string: the same as type"),
    ("name_orig", "string"),
    ("name_dest", "string"),
    ("is_flagged_fraud", "bool"),
];

#[derive(Debug, Clone)]
pub(crate) enum Num {
    Const(f64),
    Feature(usize),
    Score,
    Neg(Box<Num>),
    Arith(Arith, Box<Num>, Box<Num>),
    Size(Str),
    Trunc(Box<Num>),
    If(Box<Bool>, Box<Num>, Box<Num>),
}

/// Operators as enums: matched per evaluation, so no string compare on the hot path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone)]
pub(crate) enum Str {
    Const(String),
    Type,
    NameOrig,
    NameDest,
}

#[derive(Debug, Clone)]
pub(crate) enum Bool {
    Const(bool),
    Flagged,
    Cmp(Cmp, Num, Num),
    StrEq(bool, Str, Str),
    /// `type == 'X'` (or `!=`) and `type in [...]`: a bit per type, checked without a string compare.
    TypeIn(bool, u8),
    StrIn(Str, Vec<String>),
    NumIn(Num, Vec<f64>),
    StrFn(StrFn, Str, Str),
    Same(bool, Box<Bool>, Box<Bool>),
    And(Box<Bool>, Box<Bool>),
    Or(Box<Bool>, Box<Bool>),
    Not(Box<Bool>),
    If(Box<Bool>, Box<Bool>, Box<Bool>),
}

enum Typed {
    Num(Num),
    Str(Str),
    Bool(Bool),
}

impl Typed {
    fn kind(&self) -> &'static str {
        match self {
            Typed::Num(_) => "a number",
            Typed::Str(_) => "a string",
            Typed::Bool(_) => "a bool",
        }
    }
}

/// Parses and compiles `source`; the error says what is wrong and what is allowed.
pub(crate) fn compile(source: &str) -> Result<Bool, String> {
    let program = cel::Program::compile(source).map_err(|e| format!("does not parse: {e}"))?;
    match typed(program.expression())? {
        Typed::Bool(b) => Ok(b),
        other => Err(format!(
            "is {}, not a condition: a rule must be true or false",
            other.kind()
        )),
    }
}

fn typed(e: &IdedExpr) -> Result<Typed, String> {
    Ok(match &e.expr {
        Expr::Literal(l) => literal(l)?,
        Expr::Ident(name) => ident(name)?,
        Expr::Call(call) => {
            let args: Vec<&IdedExpr> = call.target.iter().map(|t| &**t).chain(&call.args).collect();
            self::call(&call.func_name, &args)?
        }
        Expr::List(_) => return Err("a list is only allowed after `in`".into()),
        Expr::Select(s) => {
            return Err(format!(
                "`.{}`: fields are plain names here (amount, type, orig_tx_count_window, ...)",
                s.field
            ))
        }
        _ => return Err("maps, messages and comprehensions are not supported in rules".into()),
    })
}

fn literal(l: &LiteralValue) -> Result<Typed, String> {
    Ok(match l {
        LiteralValue::Boolean(b) => Typed::Bool(Bool::Const(*b.inner())),
        LiteralValue::Double(d) => Typed::Num(Num::Const(*d.inner())),
        LiteralValue::Int(i) => Typed::Num(Num::Const(*i.inner() as f64)),
        LiteralValue::UInt(u) => Typed::Num(Num::Const(*u.inner() as f64)),
        LiteralValue::String(s) => Typed::Str(Str::Const(s.inner().to_string())),
        LiteralValue::Null | LiteralValue::Bytes(_) => {
            return Err("null and bytes have no meaning in a rule".into())
        }
    })
}

fn ident(name: &str) -> Result<Typed, String> {
    if let Some(i) = FEATURE_NAMES.iter().position(|f| *f == name) {
        return Ok(Typed::Num(Num::Feature(i)));
    }
    Ok(match name {
        "score" => Typed::Num(Num::Score),
        "type" | "tx_type" => Typed::Str(Str::Type),
        "name_orig" => Typed::Str(Str::NameOrig),
        "name_dest" => Typed::Str(Str::NameDest),
        "is_flagged_fraud" => Typed::Bool(Bool::Flagged),
        _ => {
            return Err(format!(
                "unknown field `{name}`: a rule may use {}, {}",
                FIELDS.map(|(n, _)| n).join(", "),
                FEATURE_NAMES.join(", ")
            ))
        }
    })
}

fn num(e: &IdedExpr, what: &str) -> Result<Num, String> {
    match typed(e)? {
        Typed::Num(n) => Ok(n),
        t => Err(format!("{what} needs a number, got {}", t.kind())),
    }
}

fn string(e: &IdedExpr, what: &str) -> Result<Str, String> {
    match typed(e)? {
        Typed::Str(s) => Ok(s),
        t => Err(format!("{what} needs a string, got {}", t.kind())),
    }
}

fn boolean(e: &IdedExpr, what: &str) -> Result<Bool, String> {
    match typed(e)? {
        Typed::Bool(b) => Ok(b),
        t => Err(format!("{what} needs a condition, got {}", t.kind())),
    }
}

fn call(name: &str, a: &[&IdedExpr]) -> Result<Typed, String> {
    let two = |what: &str| {
        (a.len() == 2)
            .then_some(())
            .ok_or_else(|| format!("{what} takes two operands"))
    };
    Ok(match name {
        op::LOGICAL_AND | op::LOGICAL_OR => {
            two(name)?;
            let (l, r) = (boolean(a[0], "&&/||")?, boolean(a[1], "&&/||")?);
            Typed::Bool(if name == op::LOGICAL_AND {
                Bool::And(Box::new(l), Box::new(r))
            } else {
                Bool::Or(Box::new(l), Box::new(r))
            })
        }
        op::LOGICAL_NOT => Typed::Bool(Bool::Not(Box::new(boolean(a[0], "!")?))),
        op::NEGATE => Typed::Num(Num::Neg(Box::new(num(a[0], "-")?))),
        op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO => {
            two(name)?;
            let symbol = name.chars().nth(1).expect("operator names are _x_");
            let what = format!("`{symbol}`");
            let o = match name {
                op::ADD => Arith::Add,
                op::SUBSTRACT => Arith::Sub,
                op::MULTIPLY => Arith::Mul,
                op::DIVIDE => Arith::Div,
                _ => Arith::Rem,
            };
            Typed::Num(Num::Arith(
                o,
                Box::new(num(a[0], &what)?),
                Box::new(num(a[1], &what)?),
            ))
        }
        op::EQUALS | op::NOT_EQUALS => {
            two(name)?;
            equality(name == op::EQUALS, typed(a[0])?, typed(a[1])?)?
        }
        op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS => {
            two(name)?;
            let what = format!("`{}`", &name[1..name.len() - 1]);
            let o = match name {
                op::LESS => Cmp::Lt,
                op::LESS_EQUALS => Cmp::Le,
                op::GREATER => Cmp::Gt,
                _ => Cmp::Ge,
            };
            Typed::Bool(Bool::Cmp(o, num(a[0], &what)?, num(a[1], &what)?))
        }
        op::IN => {
            two("in")?;
            membership(typed(a[0])?, a[1])?
        }
        op::CONDITIONAL => {
            let cond = Box::new(boolean(a[0], "`? :`")?);
            match (typed(a[1])?, typed(a[2])?) {
                (Typed::Num(x), Typed::Num(y)) => Typed::Num(Num::If(cond, Box::new(x), Box::new(y))),
                (Typed::Bool(x), Typed::Bool(y)) => {
                    Typed::Bool(Bool::If(cond, Box::new(x), Box::new(y)))
                }
                _ => return Err("both branches of `? :` must be numbers or both conditions".into()),
            }
        }
        "startsWith" | "endsWith" | "contains" => {
            two(name)?;
            let f = match name {
                "startsWith" => StrFn::StartsWith,
                "endsWith" => StrFn::EndsWith,
                _ => StrFn::Contains,
            };
            Typed::Bool(Bool::StrFn(f, string(a[0], name)?, string(a[1], name)?))
        }
        "size" => Typed::Num(Num::Size(string(a[0], "size")?)),
        "double" => Typed::Num(num(a[0], "double()")?),
        "int" => Typed::Num(Num::Trunc(Box::new(num(a[0], "int()")?))),
        _ => {
            return Err(format!(
                "`{}` is not supported in rules: use comparisons, arithmetic, &&, ||, !, ? :, in [...], startsWith, endsWith, contains, size, int, double",
                name.trim_matches('_')
            ))
        }
    })
}

fn equality(eq: bool, l: Typed, r: Typed) -> Result<Typed, String> {
    Ok(Typed::Bool(match (l, r) {
        (Typed::Num(x), Typed::Num(y)) => {
            let c = Bool::Cmp(Cmp::Eq, x, y);
            if eq {
                c
            } else {
                Bool::Not(Box::new(c))
            }
        }
        (Typed::Str(Str::Type), Typed::Str(Str::Const(c)))
        | (Typed::Str(Str::Const(c)), Typed::Str(Str::Type)) => Bool::TypeIn(eq, type_bit(&c)?),
        (Typed::Str(x), Typed::Str(y)) => Bool::StrEq(eq, x, y),
        (Typed::Bool(x), Typed::Bool(y)) => Bool::Same(eq, Box::new(x), Box::new(y)),
        (x, y) => return Err(format!("`==` compares {} with {}", x.kind(), y.kind())),
    }))
}

fn membership(item: Typed, list: &IdedExpr) -> Result<Typed, String> {
    let Expr::List(l) = &list.expr else {
        return Err("`in` needs a list literal: type in [\"TRANSFER\", \"CASH_OUT\"]".into());
    };
    let elements = l
        .elements
        .iter()
        .map(typed)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Typed::Bool(match item {
        Typed::Str(Str::Type) => {
            let mut mask = 0;
            for e in elements {
                match e {
                    Typed::Str(Str::Const(c)) => mask |= type_bit(&c)?,
                    _ => return Err("a string `in` list holds string literals only".into()),
                }
            }
            Bool::TypeIn(true, mask)
        }
        Typed::Str(s) => Bool::StrIn(
            s,
            elements
                .into_iter()
                .map(|e| match e {
                    Typed::Str(Str::Const(c)) => Ok(c),
                    _ => Err("a string `in` list holds string literals only".to_string()),
                })
                .collect::<Result<_, _>>()?,
        ),
        Typed::Num(n) => Bool::NumIn(
            n,
            elements
                .into_iter()
                .map(|e| match e {
                    Typed::Num(Num::Const(c)) => Ok(c),
                    _ => Err("a number `in` list holds number literals only".to_string()),
                })
                .collect::<Result<_, _>>()?,
        ),
        Typed::Bool(_) => return Err("`in` needs a number or a string on its left".into()),
    }))
}

/// The bit of transaction type `name`; an unknown type is an error (a typo would never match).
fn type_bit(name: &str) -> Result<u8, String> {
    let t: TransactionType = name.parse().map_err(|_| {
        format!(
            "there is no transaction type {name:?}: use {}",
            TransactionType::ALL.map(|t| t.as_str()).join(", ")
        )
    })?;
    Ok(1 << t as u8)
}

impl Num {
    fn eval(&self, x: &Input<'_>) -> f64 {
        match self {
            Num::Const(c) => *c,
            Num::Feature(i) => x.features[*i],
            Num::Score => x.score,
            Num::Neg(n) => -n.eval(x),
            Num::Arith(o, l, r) => {
                let (l, r) = (l.eval(x), r.eval(x));
                match o {
                    Arith::Add => l + r,
                    Arith::Sub => l - r,
                    Arith::Mul => l * r,
                    Arith::Div => l / r,
                    Arith::Rem => l % r,
                }
            }
            Num::Size(s) => s.eval(x).chars().count() as f64,
            Num::Trunc(n) => n.eval(x).trunc(),
            Num::If(c, a, b) => {
                if c.eval(x) {
                    a.eval(x)
                } else {
                    b.eval(x)
                }
            }
        }
    }
}

impl Str {
    fn eval<'a>(&'a self, x: &Input<'a>) -> &'a str {
        match self {
            Str::Const(c) => c,
            Str::Type => x.tx_type.as_str(),
            Str::NameOrig => x.name_orig,
            Str::NameDest => x.name_dest,
        }
    }
}

impl Bool {
    pub(crate) fn eval(&self, x: &Input<'_>) -> bool {
        match self {
            Bool::Const(c) => *c,
            Bool::Flagged => x.is_flagged_fraud,
            Bool::Cmp(o, l, r) => {
                let (l, r) = (l.eval(x), r.eval(x));
                match o {
                    Cmp::Lt => l < r,
                    Cmp::Le => l <= r,
                    Cmp::Gt => l > r,
                    Cmp::Ge => l >= r,
                    Cmp::Eq => l == r,
                }
            }
            Bool::StrEq(eq, l, r) => (l.eval(x) == r.eval(x)) == *eq,
            Bool::TypeIn(eq, mask) => (mask & (1 << x.tx_type as u8) != 0) == *eq,
            Bool::StrIn(s, list) => {
                let s = s.eval(x);
                list.iter().any(|c| c == s)
            }
            Bool::NumIn(n, list) => {
                let n = n.eval(x);
                list.contains(&n)
            }
            Bool::StrFn(f, s, arg) => {
                let (s, arg) = (s.eval(x), arg.eval(x));
                match f {
                    StrFn::StartsWith => s.starts_with(arg),
                    StrFn::EndsWith => s.ends_with(arg),
                    StrFn::Contains => s.contains(arg),
                }
            }
            Bool::Same(eq, l, r) => (l.eval(x) == r.eval(x)) == *eq,
            Bool::And(l, r) => l.eval(x) && r.eval(x),
            Bool::Or(l, r) => l.eval(x) || r.eval(x),
            Bool::Not(b) => !b.eval(x),
            Bool::If(c, a, b) => {
                if c.eval(x) {
                    a.eval(x)
                } else {
                    b.eval(x)
                }
            }
        }
    }
}
