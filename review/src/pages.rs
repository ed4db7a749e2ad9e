//! The HTML: plain server-rendered pages, one small script that refreshes the queue. Everything
//! that comes from data is escaped.

use crate::alerts::{AlertDetail, LabelRow, QueueQuery, QueueRow, TxRow, PAGE_SIZE};

/// `s` safe inside HTML text and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn time(secs: u32) -> String {
    fraudstream_common::utc_datetime(secs)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#1f2937;color:#fff;padding:10px 20px;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff}header button{background:#374151;color:#fff}main{padding:16px 20px}table{border-collapse:collapse;width:100%}\
th,td{padding:6px 8px;border-bottom:1px solid #e5e7eb;text-align:left;font-size:14px}\
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.score{font-weight:600}.rule{background:#fde68a;border-radius:4px;padding:1px 5px;margin-right:4px}\
form.inline{display:inline}.fraud{background:#dc2626;color:#fff}.legit{background:#16a34a;color:#fff}\
button{padding:6px 12px;border:0;border-radius:4px;cursor:pointer}.box{border:1px solid #e5e7eb;border-radius:6px;padding:12px;margin:12px 0}\
.notice{background:#dbeafe;padding:8px 12px;border-radius:4px}";

/// A whole page around `body`, with the user and a logout button when logged in.
pub fn page(title: &str, user: Option<(&str, &str)>, body: &str) -> String {
    let who = match user {
        Some((name, csrf)) => format!(
            "<span>{} · <form class=inline method=post action=/logout><input type=hidden name=csrf value=\"{}\">\
             <button id=logout>log out</button></form></span>",
            esc(name),
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{} · fraudstream review</title>\
         <style>{STYLE}</style></head><body><header><a href=/><b>fraudstream review</b></a>{who}</header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

pub fn login(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=notice id=error>{}</p>", esc(e))
    });
    page(
        "Log in",
        None,
        &format!(
            "<h2>Log in</h2>{error}<form method=post action=/login>\
             <p><label>User <input name=user id=user autofocus></label></p>\
             <p><label>Password <input name=password id=password type=password></label></p>\
             <p><button id=login>Log in</button></p></form>"
        ),
    )
}

/// The `<tbody>` rows of the queue (also what the refresh script fetches).
pub fn queue_rows(rows: &[QueueRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let rules: String = r
            .rule_ids
            .iter()
            .map(|id| format!("<span class=rule>{}</span>", esc(id)))
            .collect();
        out.push_str(&format!(
            "<tr data-id=\"{id}\"><td>{}</td><td><a href=\"/alerts/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
             <td class=num>{:.2}</td><td class=\"num score\">{:.4}</td><td>v{}</td><td>{rules}</td></tr>",
            time(r.event_time),
            esc(&r.name_orig),
            esc(&r.tx_type),
            r.amount,
            r.score,
            r.model_version,
            id = esc(&r.transaction_id),
        ));
    }
    out
}

pub fn queue(q: &QueueQuery, rows: &[QueueRow], total: u64, notice: Option<&str>) -> String {
    let selected = |v: &str| if q.tx_type == v { " selected" } else { "" };
    let types: String = ["", "PAYMENT", "TRANSFER", "CASH_OUT", "DEBIT", "CASH_IN"]
        .iter()
        .map(|t| {
            format!(
                "<option value=\"{t}\"{}>{}</option>",
                selected(t),
                if t.is_empty() { "all types" } else { t }
            )
        })
        .collect();
    let sort = |v: &str, label: &str| {
        format!(
            "<option value={v}{}>{label}</option>",
            if q.sort == v { " selected" } else { "" }
        )
    };
    let pages = total.div_ceil(PAGE_SIZE as u64).max(1);
    let link = |page: u32| {
        format!(
            "/?sort={}&type={}&min_amount={}&rule={}&page={page}",
            esc(&q.sort),
            esc(&q.tx_type),
            q.min_amount.map_or(String::new(), |a| a.to_string()),
            esc(&q.rule)
        )
    };
    let prev = if q.page > 0 {
        format!("<a href=\"{}\">← newer page</a> ", link(q.page - 1))
    } else {
        String::new()
    };
    let next = if ((q.page + 1) as u64) < pages {
        format!(" <a href=\"{}\">next page →</a>", link(q.page + 1))
    } else {
        String::new()
    };
    let notice = notice.map_or(String::new(), |n| {
        format!("<p class=notice id=notice>{}</p>", esc(n))
    });
    format!(
        "{notice}<h2>Open alerts <small id=open>{total}</small></h2>\
         <form method=get action=/ id=filters>\
         <select name=sort>{}{}</select> <select name=type>{types}</select> \
         <input name=min_amount placeholder=\"min amount\" size=10 value=\"{}\"> \
         <input name=rule placeholder=\"rule id\" size=14 value=\"{}\"> <button>filter</button></form>\
         <table><thead><tr><th>event time (UTC)</th><th>transaction</th><th>origin</th><th>type</th>\
         <th>amount</th><th>score</th><th>model</th><th>rules</th></tr></thead>\
         <tbody id=queue>{}</tbody></table><p>page {} of {pages} {prev}{next}</p>\
         <script>\
         // Live: the rows (and the count) again every 3 s; an alert another analyst closed leaves.\n\
         setInterval(async () => {{\
           const r = await fetch('/queue/rows' + location.search, {{credentials: 'same-origin'}});\
           if (!r.ok) return;\
           document.getElementById('queue').innerHTML = await r.text();\
           document.getElementById('open').textContent = r.headers.get('x-open-alerts');\
         }}, 3000);\
         </script>",
        sort("newest", "newest first"),
        sort("score", "highest score first"),
        q.min_amount.map_or(String::new(), |a| a.to_string()),
        esc(&q.rule),
        queue_rows(rows),
        q.page + 1,
    )
}

/// One alert: the transaction, the score, the reasons (rule hits first), the label if any, the
/// origin account's history and the verdict form.
pub fn detail(
    a: &AlertDetail,
    tx: Option<&TxRow>,
    history: &[TxRow],
    labels: &[LabelRow],
    csrf: &str,
) -> String {
    let mut reasons = String::new();
    for ((id, version), action) in a.rule_ids.iter().zip(&a.rule_versions).zip(&a.rule_actions) {
        reasons.push_str(&format!(
            "<li class=rule-hit>rule <b>{}</b> v{version} ({})</li>",
            esc(id),
            esc(action)
        ));
    }
    for (f, c) in a.reason_features.iter().zip(&a.reason_contributions) {
        reasons.push_str(&format!(
            "<li>{} <span class=num>{c:+.3}</span> (SHAP, raw score)</li>",
            esc(f)
        ));
    }
    let fields = match tx {
        Some(t) => format!(
            "<tr><td>step</td><td>{}</td></tr><tr><td>destination</td><td>{}</td></tr>\
             <tr><td>origin balance</td><td>{:.2} → {:.2}</td></tr><tr><td>destination balance</td><td>{:.2} → {:.2}</td></tr>",
            t.step,
            esc(&t.name_dest),
            t.oldbalance_org,
            t.newbalance_orig,
            t.oldbalance_dest,
            t.newbalance_dest
        ),
        None => "<tr><td colspan=2>(the transaction row has not landed yet)</td></tr>".into(),
    };
    let history_rows: String = history
        .iter()
        .map(|h| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=num>{:.2}</td><td>{}</td><td class=num>{:.2} → {:.2}</td></tr>",
                time(h.event_time),
                esc(&h.transaction_id),
                esc(&h.tx_type),
                h.amount,
                esc(&h.name_dest),
                h.oldbalance_org,
                h.newbalance_orig
            )
        })
        .collect();
    let verdict = match labels.iter().find(|l| l.source == "ANALYST") {
        Some(l) => format!(
            "<p class=notice id=verdict>Closed: {} by {}{}</p>",
            if l.is_fraud == 1 { "confirmed fraud" } else { "dismissed" },
            esc(&l.analyst),
            if l.note.is_empty() { String::new() } else { format!(" — “{}”", esc(&l.note)) }
        ),
        None => format!(
            "<form method=post action=\"/alerts/{id}/verdict\" id=verdict-form>\
             <input type=hidden name=csrf value=\"{}\"><p><label>Note <input name=note size=60></label></p>\
             <button class=fraud name=verdict value=fraud id=confirm>Confirm fraud</button> \
             <button class=legit name=verdict value=legit id=dismiss>Dismiss</button></form>",
            esc(csrf),
            id = esc(&a.transaction_id)
        ),
    };
    let chargeback = labels
        .iter()
        .find(|l| l.source == "FILE")
        .map_or(String::new(), |l| {
            format!(
                "<p>Chargeback data: {}.</p>",
                if l.is_fraud == 1 {
                    "fraud"
                } else {
                    "legitimate"
                }
            )
        });
    format!(
        "<p><a href=/>← queue</a></p><h2>Alert {id}</h2>\
         <div class=box><p><b>{}</b> of <b>{:.2}</b> from <b>{}</b> at {} UTC</p>\
         <p>Score <b class=score>{:.4}</b> (threshold {:.4}) by {} v{}; rule set {}</p>\
         <table>{fields}</table></div>\
         <div class=box><h3>Reasons</h3><ol id=reasons>{reasons}</ol></div>\
         <div class=box><h3>Verdict</h3>{chargeback}{verdict}</div>\
         <div class=box><h3>{} — newest transactions</h3><table><thead><tr><th>time</th><th>transaction</th>\
         <th>type</th><th>amount</th><th>destination</th><th>balance</th></tr></thead><tbody>{history_rows}</tbody></table></div>",
        esc(&a.tx_type),
        a.amount,
        esc(&a.name_orig),
        time(a.event_time),
        a.score,
        a.threshold,
        esc(&a.model_name),
        a.model_version,
        a.rules_version,
        esc(&a.name_orig),
        id = esc(&a.transaction_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_escaped_and_times_are_civil() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20");
    }
}
