//! `/api/views`, `/api/views/{view}` and its Server-Sent Events stream.
//!
//! A request reads one table version under its read lock: a key is a hash lookup plus the copy
//! of one row's JSON; a page walks the maintained order (`?order_by=` builds that column's
//! order on first use, then keeps it). Full reads are paged: [`DEFAULT_PAGE`] rows unless
//! `limit` says otherwise (`limit=all` for everything).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::serving::table::{Order, ServingTable};
use crate::serving::{ServedView, ServingState};
use crate::storage::delta::AsOf;

/// Rows a full read returns when `limit` is not given.
pub const DEFAULT_PAGE: usize = 1000;

/// The parameters of `GET /api/views/{view}`.
#[derive(Debug, Default, Clone)]
pub(super) struct ViewParams {
    key: Option<String>,
    limit: Option<usize>,
    offset: usize,
    order_by: Option<(String, bool)>,
    explain: bool,
    /// `as_of`: the view as the master dataset was at a table version or time.
    as_of: Option<AsOf>,
    /// `from` / `to`: a windowed view's rows whose window starts in `[from, to)` (µs).
    from: Option<i64>,
    to: Option<i64>,
    /// `emit=final` (a stream of a view with a watermark): each window's row once, when it
    /// closes, and again when a late event changes it.
    emit_final: bool,
}

impl ViewParams {
    /// True when the request asks for the plain view (no key, order, page or explain).
    fn plain(&self) -> bool {
        self.key.is_none()
            && self.limit.is_none()
            && self.offset == 0
            && self.order_by.is_none()
            && !self.explain
            && self.as_of.is_none()
            && self.from.is_none()
            && self.to.is_none()
    }

    fn cache_key(&self) -> String {
        format!("{self:?}")
    }
}

pub(super) fn parse_params(q: &BTreeMap<String, String>) -> ApiResult<ViewParams> {
    let mut p = ViewParams::default();
    let number = |name: &str, v: &str| {
        v.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("{name} `{v}`: expected a number of rows ≥ 0"))
        })
    };
    for (k, v) in q {
        match k.as_str() {
            "key" => p.key = Some(v.clone()),
            "limit" if v == "all" => p.limit = Some(usize::MAX),
            "limit" => p.limit = Some(number("limit", v)?),
            "offset" => p.offset = number("offset", v)?,
            "emit" => {
                p.emit_final = match v.as_str() {
                    "final" => true,
                    "changes" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "emit `{v}`: expected `final` (each window once, when it closes) or \
                             `changes`"
                        )));
                    }
                }
            }
            "from" | "to" => {
                let t = crate::event::parse_timestamp(v.as_bytes()).map_err(|why| {
                    ApiError::bad_request(format!(
                        "{k} `{v}`: {why} (an RFC 3339 time with its offset, such as \
                         2026-12-01T10:00:00Z)"
                    ))
                })?;
                if k == "from" {
                    p.from = Some(t);
                } else {
                    p.to = Some(t);
                }
            }
            "order_by" => {
                let (col, desc) = match v.split_once(':') {
                    Some((c, "desc")) => (c, true),
                    Some((c, "asc")) => (c, false),
                    Some((_, d)) => {
                        return Err(ApiError::bad_request(format!(
                            "order_by `{v}`: direction `{d}` is not `asc` or `desc`"
                        )));
                    }
                    None => match v.strip_prefix('-') {
                        Some(c) => (c, true),
                        None => (v.as_str(), false),
                    },
                };
                p.order_by = Some((col.to_string(), desc));
            }
            "explain" => {
                p.explain = match v.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "explain `{v}`: expected true or false"
                        )));
                    }
                }
            }
            "as_of" => {
                p.as_of = Some(
                    AsOf::parse(v)
                        .map_err(|e| ApiError::bad_request(format!("as_of `{v}`: {e}")))?,
                )
            }
            "access_token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; expected key, limit, offset, order_by, explain, as_of"
                )));
            }
        }
    }
    Ok(p)
}

pub(super) fn view<'a>(s: &'a ServingState, name: &str) -> ApiResult<&'a Arc<ServedView>> {
    s.views.iter().find(|v| v.def.name == name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no view `{name}`; views: {}",
            s.views
                .iter()
                .map(|v| v.def.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

fn columns(v: &ServedView) -> Value {
    v.def
        .output_schema()
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect()
}

/// `GET /api/views`.
pub(super) async fn list_views(State(st): State<AppState>) -> Json<Value> {
    let s = st.state();
    let topic = &st.pipeline.config.kafka.topic;
    Json(
        s.views
            .iter()
            .map(|v| {
                let t = v.read();
                json!({
                    "name": v.def.name,
                    "sql": v.def.sql,
                    "columns": columns(v),
                    "rows": t.total(),
                    "window": v.def.window().map(|w| json!({
                        "size_seconds": w.shape.size as f64 / 1e6,
                        "slide_seconds": w.shape.slide as f64 / 1e6,
                        "watermark": v.def.watermark().is_some(),
                    })),
                    "freshness": s.freshness_of(v, &t, topic),
                })
            })
            .collect(),
    )
}

/// The rows a request selects, as serving ids, and how many the selection has in all.
fn select(v: &ServedView, t: &ServingTable, p: &ViewParams) -> ApiResult<(Vec<usize>, usize)> {
    let name = &v.def.name;
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    // A windowed view: a key's windows (`key` names the other group keys), or a time range,
    // in time order, from the time index.
    if t.has_times() && (p.key.is_some() || p.from.is_some() || p.to.is_some()) {
        let parts = p
            .key
            .as_deref()
            .map(|k| key_values(k, v.def.group_len() - 1));
        if parts.is_some() && v.def.group_len() == 1 {
            return Err(ApiError::bad_request(format!(
                "key: view `{name}` has no group key besides its window; select its windows \
                 with from and to"
            )));
        }
        if let Some(parts) = &parts
            && parts.len() + 1 != v.def.group_len()
        {
            return Err(ApiError::bad_request(format!(
                "key `{}`: view `{name}` has {} group keys besides its window; separate their \
                 values with `,`",
                p.key.as_deref().unwrap_or_default(),
                v.def.group_len() - 1
            )));
        }
        let rows = t
            .time_range(parts.as_deref(), p.from, p.to)
            .map_err(|e| ApiError::bad_request(msg(&e)))?;
        return Ok(page_of(rows, p.offset, limit));
    }
    if p.from.is_some() || p.to.is_some() {
        return Err(ApiError::bad_request(format!(
            "from/to: view `{name}` has no window() in GROUP BY, so no time ranges"
        )));
    }
    if let Some(key) = &p.key {
        let glen = v.def.group_len();
        if glen == 0 {
            return Err(ApiError::bad_request(format!(
                "view `{name}` has no GROUP BY key to select with `key`"
            )));
        }
        let parts = key_values(key, glen);
        if parts.len() != glen {
            let schema = v.def.output_schema();
            let names: Vec<&str> = schema.fields()[..glen]
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(ApiError::bad_request(format!(
                "key `{key}`: view `{name}` has {glen} key columns ({}); separate their values with `,`",
                names.join(", ")
            )));
        }
        let bytes = t
            .encode_key(&parts)
            .map_err(|e| ApiError::bad_request(format!("key `{key}`: {}", msg(&e))))?;
        return Ok(page_of(
            t.lookup(&bytes).into_iter().collect(),
            p.offset,
            limit,
        ));
    }
    let order = match &p.order_by {
        None => Order::View,
        Some((col, desc)) => {
            let schema = v.def.output_schema();
            let c = schema.index_of(col).map_err(|_| {
                ApiError::bad_request(format!(
                    "order_by `{col}`: view `{name}` has no such column; columns: {}",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            Order::Column {
                col: c,
                desc: *desc,
            }
        }
    };
    Ok((t.page(order, p.offset, limit)?, t.total()))
}

/// Row `sid` as JSON, with its window's state against the watermark `wm` (`_window`, in a
/// view with one) and its parts (`_explain`, when asked).
/// The row's bytes are the table's own JSON, copied as they are (the body is checked to be
/// UTF-8 once, whole).
fn push_row(
    body: &mut Vec<u8>,
    t: &ServingTable,
    sid: usize,
    wm: Option<i64>,
    explain: Option<(&str, &str)>,
) {
    let row = t.row_json(sid).unwrap_or(b"{}");
    let window = t.window_state(sid, wm);
    if window.is_none() && explain.is_none() {
        body.extend_from_slice(row);
        return;
    }
    body.extend_from_slice(row.strip_suffix(b"}").unwrap_or(row));
    if let Some(w) = window {
        body.extend_from_slice(b",\"_window\":\"");
        body.extend_from_slice(w.name().as_bytes());
        body.push(b'"');
    }
    if let Some((b, s)) = explain {
        body.extend_from_slice(format!(",\"_explain\":{{\"batch\":{b},\"speed\":{s}}}").as_bytes());
    }
    body.push(b'}');
}

/// Appends rows `sids` as JSON objects separated by commas ([`push_row`]); `explain`: each
/// row's batch and speed parts, in the same order.
fn push_rows<'e>(
    body: &mut Vec<u8>,
    t: &ServingTable,
    sids: &[usize],
    wm: Option<i64>,
    mut explain: Option<&mut dyn Iterator<Item = (Cow<'e, str>, Cow<'e, str>)>>,
) {
    body.reserve(sids.len() * 128);
    for (i, &sid) in sids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let parts = explain.as_mut().and_then(|it| it.next());
        let parts = parts.as_ref().map(|(b, s)| (b.as_ref(), s.as_ref()));
        push_row(body, t, sid, wm, parts);
    }
}

/// The page `[offset, offset + limit)` of `rows`, and how many there are in all.
fn page_of(mut rows: Vec<usize>, offset: usize, limit: usize) -> (Vec<usize>, usize) {
    let n = rows.len();
    rows.drain(..offset.min(n));
    rows.truncate(limit);
    (rows, n)
}

/// The values of `?key=` for `columns` key columns: the text whole for one (a key may hold a
/// comma), else split at `,`.
fn key_values(key: &str, columns: usize) -> Vec<&str> {
    if columns == 1 {
        vec![key]
    } else {
        key.split(',').collect()
    }
}

fn msg(e: &crate::Error) -> String {
    match e {
        crate::Error::Config(m) | crate::Error::InvalidValue(m) => m.clone(),
        other => other.to_string(),
    }
}

/// What a view's body says last, besides its rows and freshness.
#[derive(Clone, Copy)]
enum Stamp {
    /// Nothing (a stream's event: its version moves).
    None,
    /// The table's version (`GET`).
    Version,
    /// The master dataset's table version answered (`GET ?as_of=`).
    AsOf(u64),
}

/// The body of a view: the rows selected, paging, freshness, and explanations.
fn view_body(st: &AppState, v: &ServedView, p: &ViewParams, stamp: Stamp) -> ApiResult<String> {
    if let Some((col, _)) = &p.order_by
        && let Ok(c) = v.def.output_schema().index_of(col)
    {
        v.ensure_column_order(c)?;
    }
    let state = st.state();
    let watermark = state.watermark_of(v);
    let t = v.read();
    let (sids, total) = select(v, &t, p)?;
    let explained = if p.explain {
        Some(t.explain(&sids)?)
    } else {
        None
    };
    let mut parts = explained.as_ref().map(|(b, s)| {
        b.split(|&c| c == b'\n')
            .zip(s.split(|&c| c == b'\n'))
            .map(|(b, s)| (String::from_utf8_lossy(b), String::from_utf8_lossy(s)))
    });
    // One buffer: the rows are the table's own JSON, copied once; the whole body is checked
    // to be UTF-8 once, at the end.
    let mut body = Vec::with_capacity(512 + sids.len() * 128);
    body.extend_from_slice(b"{\"view\":");
    body.extend_from_slice(Value::from(v.def.name.as_str()).to_string().as_bytes());
    body.extend_from_slice(b",\"columns\":");
    body.extend_from_slice(v.columns_json.as_bytes());
    body.extend_from_slice(b",\"rows\":[");
    push_rows(
        &mut body,
        &t,
        &sids,
        watermark,
        parts.as_mut().map(|p| p as &mut dyn Iterator<Item = _>),
    );
    let mut body = String::from_utf8(body).map_err(ApiError::internal)?;
    let next = p.offset + sids.len();
    body.push_str(&format!(
        "],\"total_rows\":{total},\"offset\":{},\"next_offset\":{}",
        p.offset,
        if next < total && p.key.is_none() {
            next.to_string()
        } else {
            "null".into()
        }
    ));
    body.push_str(",\"freshness\":");
    let f = state.freshness_of(v, &t, &st.pipeline.config.kafka.topic);
    body.push_str(&serde_json::to_string(&f).map_err(ApiError::internal)?);
    match stamp {
        Stamp::None => {}
        Stamp::Version => body.push_str(&format!(",\"version\":{}", t.version())),
        Stamp::AsOf(v) => body.push_str(&format!(",\"as_of\":{{\"table_version\":{v}}}")),
    }
    body.push('}');
    Ok(body)
}

fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `GET /api/views/{view}`.
pub(super) async fn get_view(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = parse_params(&q)?;
    let s = st.state();
    let v = view(&s, &name)?;
    let Some(as_of) = params.as_of else {
        return Ok(json_response(view_body(&st, v, &params, Stamp::Version)?));
    };
    let history = st.history.as_ref().ok_or_else(|| {
        ApiError::bad_request("as_of: this server does not compute views of the past")
    })?;
    let (version, views) = history.views(&st.pipeline, as_of).await?;
    let past = views
        .iter()
        .find(|p| p.def.name == v.def.name)
        .ok_or_else(|| ApiError::not_found(format!("view `{name}` as of {as_of}")))?;
    Ok(json_response(view_body(
        &st,
        past,
        &params,
        Stamp::AsOf(version),
    )?))
}

/// What a stream has sent last.
struct StreamCursor {
    st: AppState,
    rx: tokio::sync::watch::Receiver<Arc<ServingState>>,
    name: String,
    params: ViewParams,
    view: Option<Arc<ServedView>>,
    changes: Option<tokio::sync::broadcast::Receiver<Arc<crate::serving::ChangeEvent>>>,
    /// The last `view` body sent (without the batch view's age): a body equal to it is not
    /// sent again.
    last: String,
    /// `emit=final`: the watermark up to which closed windows have been sent.
    emitted: Option<i64>,
}

impl StreamCursor {
    /// The next event: a snapshot when the view is new to this stream (connect, batch swap,
    /// fallen behind), then per change either the change itself (a plain stream: the same
    /// bytes for every subscriber) or this stream's page when the change touches it.
    async fn next(&mut self) -> Option<Event> {
        if self.params.emit_final {
            return self.next_final().await;
        }
        loop {
            let s = self.rx.borrow_and_update().clone();
            let current = match view(&s, &self.name) {
                Ok(v) => Arc::clone(v),
                Err(e) => return Some(Event::default().event("error").data(e.body())),
            };
            let swapped = self.view.as_ref().is_none_or(|v| !Arc::ptr_eq(v, &current));
            if swapped {
                self.changes = Some(current.subscribe());
                self.view = Some(Arc::clone(&current));
                if let Some(e) = self.snapshot(&current, true) {
                    return Some(e);
                }
                continue;
            }
            let changes = self.changes.as_mut()?;
            tokio::select! {
                ev = changes.recv() => match ev {
                    Ok(change) => {
                        if self.params.plain() {
                            return Some(Event::default().event("changes").data(change.json.as_ref()));
                        }
                        if let Some(e) = self.relevant(&current, &change) {
                            return Some(e);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        if let Some(e) = self.snapshot(&current, true) {
                            return Some(e);
                        }
                    }
                    Err(RecvError::Closed) => self.view = None,
                },
                r = self.rx.changed() => if r.is_err() { return None },
            }
        }
    }

    /// The next `final` event: the rows whose windows the watermark has closed since the last
    /// one, or closed rows a late event changed. From the watermark at connection on (the
    /// windows closed before are in `GET /api/views/{view}`).
    async fn next_final(&mut self) -> Option<Event> {
        loop {
            let s = self.rx.borrow_and_update().clone();
            let current = match view(&s, &self.name) {
                Ok(v) => Arc::clone(v),
                Err(e) => return Some(Event::default().event("error").data(e.body())),
            };
            if self.view.as_ref().is_none_or(|v| !Arc::ptr_eq(v, &current)) {
                // A new table (a batch swap) holds the same closed windows: nothing to send.
                self.changes = Some(current.subscribe());
                self.view = Some(Arc::clone(&current));
            }
            let wm = s.watermark_of(&current);
            match (self.emitted, wm) {
                (Some(prev), Some(wm)) if wm > prev => {
                    self.emitted = Some(wm);
                    let rows = current.read().closing(prev, wm);
                    if !rows.is_empty() {
                        return Some(self.final_event(&s, &current, &rows, false));
                    }
                }
                (None, Some(wm)) => self.emitted = Some(wm),
                _ => {}
            }
            let changes = self.changes.as_mut()?;
            tokio::select! {
                ev = changes.recv() => match ev {
                    Ok(change) => {
                        let Some(done) = self.emitted else { continue };
                        let late: Vec<usize> = {
                            let t = current.read();
                            change
                                .upserts
                                .iter()
                                .copied()
                                .filter(|&sid| t.window_end(sid).is_some_and(|e| e <= done))
                                .collect()
                        };
                        if !late.is_empty() {
                            return Some(self.final_event(&s, &current, &late, true));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => self.view = None,
                },
                r = self.rx.changed() => if r.is_err() { return None },
            }
        }
    }

    /// `{"view", "watermark", "late", "rows"}`: rows of closed windows (`late`: changed by
    /// late events after they closed), each with its `_window` state.
    fn final_event(&self, s: &ServingState, v: &ServedView, sids: &[usize], late: bool) -> Event {
        let t = v.read();
        let wm = s.watermark_of(v);
        let body = format!(
            "{{\"view\":{},\"watermark\":{},\"late\":{late},\"rows\":[",
            Value::from(v.def.name.as_str()),
            Value::from(wm.and_then(crate::speed::rfc3339))
        );
        let mut body = body.into_bytes();
        push_rows(&mut body, &t, sids, wm, None);
        body.extend_from_slice(b"]}");
        // Rows of the table's own JSON: valid UTF-8 by construction.
        Event::default()
            .event("final")
            .data(String::from_utf8_lossy(&body))
    }

    fn relevant(&mut self, v: &ServedView, change: &crate::serving::ChangeEvent) -> Option<Event> {
        if v.read().has_times() {
            // A windowed view's `key` names several rows (its windows): the page decides.
            return self.snapshot(v, false);
        }
        if let Some(key) = &self.params.key {
            let t = v.read();
            let parts = key_values(key, v.def.group_len());
            let sid = t.encode_key(&parts).ok().and_then(|b| t.sid(&b));
            let touched = sid.is_some_and(|s| change.upserts.binary_search(&s).is_ok());
            if !touched && !change.removals {
                return None;
            }
        }
        self.snapshot(v, false)
    }

    fn snapshot(&mut self, v: &ServedView, force: bool) -> Option<Event> {
        let body = if self.params.key.is_some() {
            view_body(&self.st, v, &self.params, Stamp::None).map(Arc::<str>::from)
        } else {
            let (st, params) = (&self.st, &self.params);
            v.cached_page(&params.cache_key(), || {
                view_body(st, v, params, Stamp::None)
            })
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return Some(Event::default().event("error").data(e.body())),
        };
        let sig = without_age(&body);
        if !force && sig == self.last {
            return None;
        }
        self.last = sig;
        Some(Event::default().event("view").data(body.as_ref()))
    }
}

/// The body without `"batch_age_seconds":…` (it changes every instant, the view does not).
fn without_age(body: &str) -> String {
    match body.find("\"batch_age_seconds\":") {
        Some(i) => {
            let rest = &body[i..];
            let end = rest.find(',').unwrap_or(rest.len());
            format!("{}{}", &body[..i], &rest[end..])
        }
        None => body.to_string(),
    }
}

/// `GET /api/views/{view}/stream`.
pub(super) async fn stream_view(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = parse_params(&q)?;
    if params.as_of.is_some() {
        return Err(ApiError::bad_request(
            "as_of: a stream follows the live view; ask GET /api/views/{view}?as_of= for the past",
        ));
    }
    let v = Arc::clone(view(&st.state(), &name)?);
    if params.emit_final && v.def.watermark().is_none() {
        return Err(ApiError::bad_request(format!(
            "emit=final: view `{name}` has no watermark, so its windows never close; declare \
             `watermark` in its [[views]] entry"
        )));
    }
    let cursor = StreamCursor {
        rx: st.served.clone(),
        st,
        name,
        params,
        view: None,
        changes: None,
        last: String::new(),
        emitted: None,
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        let ev = c.next().await?;
        Some((Ok(ev), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
