//! A Link session in the browser, step by step: the token opens it, the user picks an
//! institution, logs in (Sandbox's test credentials), answers MFA, authorises at an OAuth bank,
//! picks accounts; the last step creates or repairs the item exactly as `/emulator/link/complete`
//! does. Every step is checked here, so a page cannot skip one.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};

use crate::emulator::Emulator;
use crate::emulator::data::{self, InstitutionFixture};
use crate::emulator::errors::ApiError;
use crate::emulator::state::{LinkTokenRecord, State, TestUser, login};

/// Sessions are forgotten this long after they start (a Link token lives 4 hours at most, but a
/// person finishes Link in minutes; Plaid gives up on OAuth after 10 and on selection after 5).
const SESSION_LIFETIME_MINUTES: i64 = 30;
/// At most this many sessions are held at once.
const MAX_SESSIONS: usize = 10_000;

/// Sandbox's MFA kinds (plaid-reference §5.2), chosen by the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mfa {
    /// `mfa_device`: one code, `1234`.
    Device,
    /// `mfa_questions_<n>_<m>`: n rounds of m questions; the answer is `answer_<i>_<j>`.
    Questions { rounds: usize, per_round: usize },
    /// `mfa_selections` (one round, Yes/No) and `mfa_selections_<n>_<m>_<o>`.
    Selections { rounds: usize, per_round: usize, options: usize },
}

impl Mfa {
    pub fn for_password(password: &str) -> Option<Mfa> {
        if password == "mfa_device" {
            return Some(Mfa::Device);
        }
        if password == "mfa_selections" {
            return Some(Mfa::Selections { rounds: 1, per_round: 1, options: 0 });
        }
        let digits = |rest: &str, n: usize| -> Option<Vec<usize>> {
            let parts: Vec<usize> = rest.split('_').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            (parts.len() == n && parts.iter().all(|p| (1..10).contains(p))).then_some(parts)
        };
        if let Some(rest) = password.strip_prefix("mfa_questions_") {
            let p = digits(rest, 2)?;
            return Some(Mfa::Questions { rounds: p[0], per_round: p[1] });
        }
        if let Some(rest) = password.strip_prefix("mfa_selections_") {
            let p = digits(rest, 3)?;
            return (p[2] >= 2).then_some(Mfa::Selections { rounds: p[0], per_round: p[1], options: p[2] });
        }
        None
    }

    fn rounds(&self) -> usize {
        match self {
            Mfa::Device => 1,
            Mfa::Questions { rounds, .. } | Mfa::Selections { rounds, .. } => *rounds,
        }
    }

    /// Plaid's `mfa_type` event metadata.
    fn kind(&self) -> &'static str {
        match self {
            Mfa::Device => "code",
            Mfa::Questions { .. } => "questions",
            Mfa::Selections { .. } => "selections",
        }
    }

    /// What round `round` asks: each prompt's label and, for selections, its options.
    fn prompts(&self, round: usize) -> Vec<Value> {
        match self {
            Mfa::Device => vec![json!({"label": "Code", "hint": "We sent a code to your device.", "options": null})],
            Mfa::Questions { per_round, .. } => (0..*per_round)
                .map(|j| json!({"label": format!("Security question {} (round {})", j + 1, round + 1), "hint": null, "options": null}))
                .collect(),
            Mfa::Selections { per_round, options: 0, .. } => (0..*per_round)
                .map(|_| json!({"label": "Do you recognise this device?", "hint": null, "options": ["Yes", "No"]}))
                .collect(),
            Mfa::Selections { per_round, options, .. } => (0..*per_round)
                .map(|j| {
                    let opts: Vec<String> = (0..*options).map(|o| format!("answer_{round}_{j}_{o}")).collect();
                    json!({"label": format!("Question {} (round {})", j + 1, round + 1), "hint": null, "options": opts})
                })
                .collect(),
        }
    }

    fn accepts(&self, round: usize, answers: &[String]) -> bool {
        let expected: Vec<String> = match self {
            Mfa::Device => vec!["1234".into()],
            Mfa::Questions { per_round, .. } => (0..*per_round).map(|j| format!("answer_{round}_{j}")).collect(),
            Mfa::Selections { per_round, options: 0, .. } => vec!["Yes".into(); *per_round],
            Mfa::Selections { per_round, .. } => (0..*per_round).map(|j| format!("answer_{round}_{j}_0")).collect(),
        };
        answers.len() == expected.len() && answers.iter().zip(&expected).all(|(a, e)| a.trim() == e)
    }
}

/// Where an OAuth login at the bank stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OauthStage {
    /// The user was sent to the bank.
    Pending,
    Authorized,
    Denied,
    /// The authorisation was used to finish Link; the state id cannot be used again.
    Processed,
}

#[derive(Debug, Clone)]
pub struct LinkSession {
    pub link_session_id: String,
    pub link_token: String,
    pub started: DateTime<Utc>,
    pub institution: Option<&'static InstitutionFixture>,
    pub user: Option<TestUser>,
    /// The pending MFA and the round it is at.
    pub mfa: Option<(Mfa, usize)>,
    /// Credentials (and MFA) passed, or the bank authorised OAuth.
    pub authenticated: bool,
    pub oauth: Option<(String, OauthStage)>,
    pub finished: bool,
}

/// The sessions of one emulator.
#[derive(Debug, Default)]
pub struct LinkSessions {
    by_id: HashMap<String, LinkSession>,
    /// `oauth_state_id` → session.
    by_oauth_state: HashMap<String, String>,
}

impl LinkSessions {
    fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - ChronoDuration::minutes(SESSION_LIFETIME_MINUTES);
        self.by_id.retain(|_, s| s.started > horizon);
        let by_id = &self.by_id;
        self.by_oauth_state.retain(|_, id| by_id.contains_key(id));
    }
}

fn session_error(message: &str) -> ApiError {
    ApiError::with_message("INVALID_LINK_TOKEN", message)
}

/// The token of a session, still valid.
fn token_record(state: &State, token: &str, now: DateTime<Utc>) -> Result<LinkTokenRecord, ApiError> {
    state
        .link_tokens
        .get(token)
        .filter(|r| r.expiration > now)
        .cloned()
        .ok_or_else(|| ApiError::code("INVALID_LINK_TOKEN"))
}

fn session_mut<'a>(state: &'a mut State, id: &str, now: DateTime<Utc>) -> Result<&'a mut LinkSession, ApiError> {
    let horizon = now - ChronoDuration::minutes(SESSION_LIFETIME_MINUTES);
    state
        .link_sessions
        .by_id
        .get_mut(id)
        .filter(|s| s.started > horizon && !s.finished)
        .ok_or_else(|| session_error("this Link session has ended or expired; open Link again"))
}

/// Which institutions a create-mode token may use: its products and one of its countries.
fn eligible(rec: &LinkTokenRecord, inst: &InstitutionFixture) -> bool {
    let products = rec.request.products.as_deref().unwrap_or_default();
    products.iter().all(|p| inst.products.contains(&p.as_str()))
        && rec.request.country_codes.iter().any(|c| inst.country_codes.contains(&c.as_str()))
}

fn institution_json(inst: &InstitutionFixture) -> Value {
    json!({"institution_id": inst.id, "name": inst.name, "oauth": inst.oauth, "primary_color": inst.primary_color})
}

/// Account selection is on for a create-mode token made with a Link customization (the
/// emulator's customizations all have Account Select, several accounts allowed).
fn account_selection(rec: &LinkTokenRecord) -> bool {
    rec.item_id.is_none() && rec.request.link_customization_name.as_deref().is_some_and(|n| !n.is_empty())
}

/// The step after the user authenticated: account selection, or Link finishes.
fn after_login(emu: &Emulator, state: &mut State, id: &str, now: DateTime<Utc>) -> Result<Value, ApiError> {
    let session = session_mut(state, id, now)?;
    session.authenticated = true;
    let (token, inst) = (session.link_token.clone(), session.institution);
    let rec = token_record(state, &token, now)?;
    if account_selection(&rec) {
        let inst = inst.ok_or_else(|| session_error("no institution was selected"))?;
        let micro = state.link_sessions.by_id.get(id).and_then(|s| s.user.as_ref()).is_some_and(|u| u.micro_deposits);
        let accounts: Vec<Value> = preview_accounts(inst, micro)
            .into_iter()
            .map(|(name, mask, kind, subtype)| json!({"name": name, "mask": mask, "type": kind, "subtype": subtype}))
            .collect();
        return Ok(json!({"next": "select_account", "accounts": accounts}));
    }
    finish(emu, state, id, None, now)
}

/// The accounts the user would share: (name, mask, type, subtype), as the item will hold them.
fn preview_accounts(inst: &InstitutionFixture, micro_deposits: bool) -> Vec<(String, String, String, Option<String>)> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    data::accounts_for(inst, &mut rng)
        .into_iter()
        .filter(|a| !micro_deposits || a.account.subtype.as_deref() == Some("checking"))
        .map(|a| (a.account.name, a.account.mask.unwrap_or_default(), a.account.account_type, a.account.subtype))
        .collect()
}

/// Creates (or, in update mode, repairs) the item and answers what `onSuccess` receives.
fn finish(
    emu: &Emulator,
    state: &mut State,
    id: &str,
    masks: Option<Vec<String>>,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let session = session_mut(state, id, now)?.clone();
    if !session.authenticated {
        return Err(session_error("log in before finishing Link"));
    }
    let rec = token_record(state, &session.link_token, now)?;
    let inst = session.institution.ok_or_else(|| session_error("no institution was selected"))?;
    let mut user = session.user.clone().unwrap_or_default();
    user.accounts = masks;
    let cfg = emu.config().clone();
    let done = crate::emulator::control::finish_link(state, &cfg, &rec, inst, user, now, &session.link_session_id)?;
    if let Some(s) = state.link_sessions.by_id.get_mut(id) {
        s.finished = true;
    }
    Ok(
        json!({"next": "connected", "public_token": done["public_token"], "metadata": done["metadata"], "item_id": done["item_id"], "update_mode": done["update_mode"]}),
    )
}

/// `POST /link/web/session`: opens a session for a token, or resumes the one an OAuth redirect
/// (`received_redirect_uri`) belongs to.
pub fn start(emu: &Emulator, token: &str, received_redirect_uri: Option<&str>) -> Result<Value, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let rec = token_record(&state, token, now)?;
    state.link_sessions.prune(now);
    let client_name = rec.request.client_name.clone();
    let update_item = match &rec.item_id {
        Some(item_id) => Some(
            state
                .items
                .get(item_id)
                .filter(|i| !i.removed)
                .map(|i| i.institution)
                .ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?,
        ),
        None => None,
    };
    if let Some(uri) = received_redirect_uri {
        let url =
            url::Url::parse(uri).map_err(|_| ApiError::invalid_field("receivedRedirectUri must be a valid URL"))?;
        let state_id = url
            .query_pairs()
            .find(|(k, _)| k == "oauth_state_id")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| ApiError::code("OAUTH_STATE_ID_NOT_FOUND"))?;
        let id = state
            .link_sessions
            .by_oauth_state
            .get(&state_id)
            .cloned()
            .ok_or_else(|| ApiError::code("OAUTH_STATE_ID_NOT_FOUND"))?;
        let session =
            state.link_sessions.by_id.get_mut(&id).ok_or_else(|| ApiError::code("OAUTH_STATE_ID_NOT_FOUND"))?;
        if session.link_token != token {
            return Err(ApiError::code("INCORRECT_LINK_TOKEN"));
        }
        let inst = session.institution.ok_or_else(|| ApiError::code("OAUTH_STATE_ID_NOT_FOUND"))?;
        let stage = session.oauth.as_ref().map(|(_, s)| *s);
        match stage {
            Some(OauthStage::Authorized) => {}
            Some(OauthStage::Processed) => return Err(ApiError::code("OAUTH_STATE_ID_ALREADY_PROCESSED")),
            // The user came back without authorising (or refused) at the bank.
            _ => return Err(ApiError::code("INSUFFICIENT_CREDENTIALS")),
        }
        if let Some((_, s)) = session.oauth.as_mut() {
            *s = OauthStage::Processed;
        }
        let link_session_id = session.link_session_id.clone();
        let next = after_login(emu, &mut state, &id, now)?;
        return Ok(json!({
            "link_session_id": link_session_id,
            "client_name": client_name,
            "update_mode": rec.item_id.is_some(),
            "institution": institution_json(inst),
            "resumed": next,
        }));
    }
    if state.link_sessions.by_id.len() >= MAX_SESSIONS {
        return Err(ApiError::code("RATE_LIMIT"));
    }
    let link_session_id = uuid::Uuid::new_v4().to_string();
    state.link_sessions.by_id.insert(
        link_session_id.clone(),
        LinkSession {
            link_session_id: link_session_id.clone(),
            link_token: token.to_string(),
            started: now,
            institution: update_item,
            user: None,
            mfa: None,
            authenticated: false,
            oauth: None,
            finished: false,
        },
    );
    let institutions: Vec<Value> = match update_item {
        Some(inst) => vec![institution_json(inst)],
        None => data::INSTITUTIONS.iter().filter(|i| eligible(&rec, i)).map(institution_json).collect(),
    };
    Ok(json!({
        "link_session_id": link_session_id,
        "client_name": client_name,
        "update_mode": rec.item_id.is_some(),
        "institution": update_item.map(institution_json),
        "institutions": institutions,
        "account_selection": account_selection(&rec),
    }))
}

/// `POST /link/web/institution`: the user picked an institution. OAuth institutions start a
/// login at the bank (`oauth_state_id`); the rest ask for credentials.
pub fn select_institution(emu: &Emulator, id: &str, institution_id: &str) -> Result<Value, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let token = session_mut(&mut state, id, now)?.link_token.clone();
    let rec = token_record(&state, &token, now)?;
    let inst = data::institution(institution_id).ok_or_else(|| ApiError::code("INVALID_INSTITUTION"))?;
    let allowed = match &rec.item_id {
        Some(item_id) => state.items.get(item_id).is_some_and(|i| i.institution.id == inst.id),
        None => eligible(&rec, inst),
    };
    if !allowed {
        return Err(ApiError::code("INVALID_INSTITUTION"));
    }
    let redirect = rec.request.redirect_uri.is_some();
    let session = session_mut(&mut state, id, now)?;
    session.institution = Some(inst);
    session.user = None;
    session.mfa = None;
    session.authenticated = false;
    if !inst.oauth {
        return Ok(json!({"next": "credentials"}));
    }
    let state_id = uuid::Uuid::new_v4().to_string();
    if let Some((old, _)) = session.oauth.replace((state_id.clone(), OauthStage::Pending)) {
        state.link_sessions.by_oauth_state.remove(&old);
    }
    state.link_sessions.by_oauth_state.insert(state_id.clone(), id.to_string());
    Ok(json!({"next": "oauth", "oauth_state_id": state_id, "mode": if redirect { "redirect" } else { "popup" }}))
}

/// `POST /link/web/credentials`: Sandbox's test credentials for a non-OAuth institution.
pub fn credentials(emu: &Emulator, id: &str, username: &str, password: &str) -> Result<Value, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let session = session_mut(&mut state, id, now)?;
    let inst = session.institution.ok_or_else(|| session_error("select an institution first"))?;
    if inst.oauth {
        return Err(session_error("this institution logs in at the bank (OAuth)"));
    }
    let token = session.link_token.clone();
    let rec = token_record(&state, &token, now)?;
    if let Some(item) = rec.item_id.as_ref().and_then(|i| state.items.get(i))
        && item.error.as_ref().is_some_and(|e| e.body.error_code == "USER_PERMISSION_REVOKED")
    {
        return Err(ApiError::code("USER_PERMISSION_REVOKED"));
    }
    let user = login(username, password, false)?;
    if rec.item_id.is_none()
        && let Some(code) = inst.creation_error
    {
        return Err(ApiError::code(code));
    }
    let session = session_mut(&mut state, id, now)?;
    session.user = Some(user);
    if let Some(mfa) = Mfa::for_password(password) {
        let prompt = json!({"mfa_type": mfa.kind(), "round": 0, "rounds": mfa.rounds(), "prompts": mfa.prompts(0)});
        session.mfa = Some((mfa, 0));
        return Ok(json!({"next": "mfa", "mfa": prompt}));
    }
    after_login(emu, &mut state, id, now)
}

/// `POST /link/web/mfa`: the answers of the current round.
pub fn mfa(emu: &Emulator, id: &str, answers: &[String]) -> Result<Value, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let session = session_mut(&mut state, id, now)?;
    let (mfa, round) = session.mfa.clone().ok_or_else(|| session_error("no MFA is pending"))?;
    if !mfa.accepts(round, answers) {
        return Err(ApiError::code("INVALID_MFA"));
    }
    if round + 1 < mfa.rounds() {
        let prompt = json!({"mfa_type": mfa.kind(), "round": round + 1, "rounds": mfa.rounds(), "prompts": mfa.prompts(round + 1)});
        session.mfa = Some((mfa, round + 1));
        return Ok(json!({"next": "mfa", "mfa": prompt}));
    }
    session.mfa = None;
    after_login(emu, &mut state, id, now)
}

/// `POST /link/web/accounts`: the accounts the user shares (by mask), at least one.
pub fn select_accounts(emu: &Emulator, id: &str, masks: Vec<String>) -> Result<Value, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let session = session_mut(&mut state, id, now)?;
    let inst = session.institution.ok_or_else(|| session_error("select an institution first"))?;
    let micro = session.user.as_ref().is_some_and(|u| u.micro_deposits);
    let known: Vec<String> = preview_accounts(inst, micro).into_iter().map(|a| a.1).collect();
    if masks.is_empty() || masks.iter().any(|m| !known.contains(m)) {
        return Err(ApiError::invalid_field("select at least one of the institution's accounts"));
    }
    finish(emu, &mut state, id, Some(masks), now)
}

/// `POST /link/web/oauth_status`: a popup OAuth login, polled by Link until the bank answers.
pub fn oauth_status(emu: &Emulator, id: &str) -> Result<Value, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let session = session_mut(&mut state, id, now)?;
    match session.oauth.as_mut() {
        Some((_, OauthStage::Pending)) => Ok(json!({"next": "oauth_pending"})),
        Some((_, stage @ OauthStage::Authorized)) => {
            *stage = OauthStage::Processed;
            after_login(emu, &mut state, id, now)
        }
        Some((_, OauthStage::Denied)) => Err(ApiError::code("INSUFFICIENT_CREDENTIALS")),
        _ => Err(session_error("no OAuth login is in progress")),
    }
}

/// What the bank's page shows: the institution's name, or nothing for an unknown state id.
pub fn oauth_bank(emu: &Emulator, state_id: &str) -> Option<&'static str> {
    let state = emu.state();
    let id = state.link_sessions.by_oauth_state.get(state_id)?;
    let s = state.link_sessions.by_id.get(id)?;
    matches!(s.oauth, Some((_, OauthStage::Pending))).then_some(s.institution?.name)
}

/// `POST /link/oauth/authorize`: the user's answer at the bank. Answers where the browser goes
/// next: the token's `redirect_uri` with the state id, or nowhere (a popup closes itself).
pub fn oauth_authorize(emu: &Emulator, state_id: &str, allow: bool) -> Result<Option<String>, ApiError> {
    let now = emu.now();
    let mut state = emu.state();
    let id = state
        .link_sessions
        .by_oauth_state
        .get(state_id)
        .cloned()
        .ok_or_else(|| ApiError::code("OAUTH_STATE_ID_NOT_FOUND"))?;
    let session = session_mut(&mut state, &id, now)?;
    match session.oauth.as_mut() {
        Some((_, stage @ OauthStage::Pending)) => {
            *stage = if allow { OauthStage::Authorized } else { OauthStage::Denied }
        }
        _ => return Err(ApiError::code("OAUTH_STATE_ID_ALREADY_PROCESSED")),
    }
    let token = session.link_token.clone();
    let rec = token_record(&state, &token, now)?;
    // The redirect URI was checked when the token was made.
    Ok(rec.request.redirect_uri.and_then(|r| url::Url::parse(&r).ok()).map(|mut url| {
        url.query_pairs_mut().append_pair("oauth_state_id", state_id);
        url.to_string()
    }))
}
