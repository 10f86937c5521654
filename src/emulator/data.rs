//! Deterministic Sandbox data: institutions, the `user_good` account set, identity, account
//! numbers and a transaction history with realistic merchants. The same seed gives the same
//! data; dates are relative to the item's creation day, as in Plaid's own custom users.

use chrono::{Duration as ChronoDuration, NaiveDate};
use rand::Rng;
use rand::distr::Alphanumeric;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::plaid::wire::{
    Account, AddressData, Balances, Institution, Location, NumbersAch, Owner, OwnerAddress, OwnerEmail, OwnerPhone,
    PaymentMeta, PersonalFinanceCategory, Transaction,
};

/// A Sandbox institution the emulator knows.
#[derive(Debug, Clone)]
pub struct InstitutionFixture {
    pub id: &'static str,
    pub name: &'static str,
    pub products: &'static [&'static str],
    pub country_codes: &'static [&'static str],
    pub oauth: bool,
    pub routing_numbers: &'static [&'static str],
    pub url: &'static str,
    pub primary_color: &'static str,
    /// Only checking and savings (Houndstooth Bank is Plaid's Auth test bank).
    pub depository_only: bool,
    /// Item creation fails with this error code (the "Unhealthy" test banks).
    pub creation_error: Option<&'static str>,
}

const ALL_PRODUCTS: &[&str] = &["assets", "auth", "balance", "identity", "investments", "liabilities", "transactions"];

/// The Sandbox institutions (plaid-reference §5.3).
pub const INSTITUTIONS: &[InstitutionFixture] = &[
    InstitutionFixture {
        id: "ins_109508",
        name: "First Platypus Bank",
        products: ALL_PRODUCTS,
        country_codes: &["US"],
        oauth: false,
        routing_numbers: &["011401533", "021000021"],
        url: "https://www.plaid.com",
        primary_color: "#1f1f1f",
        depository_only: false,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_109509",
        name: "First Gingham Credit Union",
        products: ALL_PRODUCTS,
        country_codes: &["US"],
        oauth: false,
        routing_numbers: &["011103093"],
        url: "https://www.plaid.com",
        primary_color: "#8a1d2c",
        depository_only: false,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_109510",
        name: "Tattersall Federal Credit Union",
        products: ALL_PRODUCTS,
        country_codes: &["US"],
        oauth: false,
        routing_numbers: &["011200365"],
        url: "https://www.plaid.com",
        primary_color: "#2a5ea8",
        depository_only: false,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_109511",
        name: "Tartan Bank",
        products: ALL_PRODUCTS,
        country_codes: &["US"],
        oauth: false,
        routing_numbers: &["011302616"],
        url: "https://www.plaid.com",
        primary_color: "#4d7c0f",
        depository_only: false,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_109512",
        name: "Houndstooth Bank",
        products: &["auth", "balance", "identity", "transactions"],
        country_codes: &["US"],
        oauth: false,
        routing_numbers: &["021000021"],
        url: "https://www.plaid.com",
        primary_color: "#3b3b3b",
        depository_only: true,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_127287",
        name: "Platypus OAuth Bank",
        products: ALL_PRODUCTS,
        country_codes: &["US"],
        oauth: true,
        routing_numbers: &["011000138"],
        url: "https://www.plaid.com",
        primary_color: "#0a85ea",
        depository_only: false,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_43",
        name: "Tartan-Dominion Bank of Canada",
        products: &["auth", "balance", "identity", "transactions"],
        country_codes: &["CA"],
        oauth: false,
        routing_numbers: &[],
        url: "https://www.plaid.com",
        primary_color: "#b91c1c",
        depository_only: false,
        creation_error: None,
    },
    InstitutionFixture {
        id: "ins_132361",
        name: "Unhealthy Platypus Bank - Down",
        products: ALL_PRODUCTS,
        country_codes: &["US"],
        oauth: false,
        routing_numbers: &[],
        url: "https://www.plaid.com",
        primary_color: "#6b7280",
        depository_only: false,
        creation_error: Some("INSTITUTION_DOWN"),
    },
];

pub fn institution(id: &str) -> Option<&'static InstitutionFixture> {
    INSTITUTIONS.iter().find(|i| i.id == id)
}

impl InstitutionFixture {
    pub fn to_wire(&self) -> Institution {
        Institution {
            institution_id: self.id.to_string(),
            name: self.name.to_string(),
            products: self.products.iter().map(|s| s.to_string()).collect(),
            country_codes: self.country_codes.iter().map(|s| s.to_string()).collect(),
            url: Some(self.url.to_string()),
            primary_color: Some(self.primary_color.to_string()),
            logo: None,
            routing_numbers: self.routing_numbers.iter().map(|s| s.to_string()).collect(),
            dtc_numbers: Vec::new(),
            oauth: self.oauth,
            status: None,
            connection_availability: Some("SUPPORTED".into()),
        }
    }
}

/// One account as the emulator holds it: what Plaid returns, plus its numbers.
#[derive(Debug, Clone)]
pub struct AccountFixture {
    pub account: Account,
    /// Full account number; only `/auth/get` reveals it.
    pub number: Option<String>,
    pub routing: Option<String>,
    /// Whether transactions are generated for it.
    pub has_transactions: bool,
}

struct AccountSpec {
    name: &'static str,
    official: Option<&'static str>,
    mask: &'static str,
    kind: &'static str,
    subtype: &'static str,
    available: Option<&'static str>,
    current: &'static str,
    limit: Option<&'static str>,
    transactions: bool,
}

/// Sandbox's `user_good` accounts (plaid-reference §5.5).
const USER_GOOD: &[AccountSpec] = &[
    AccountSpec {
        name: "Plaid Checking",
        official: Some("Plaid Gold Standard 0% Interest Checking"),
        mask: "0000",
        kind: "depository",
        subtype: "checking",
        available: Some("100"),
        current: "110",
        limit: None,
        transactions: true,
    },
    AccountSpec {
        name: "Plaid Saving",
        official: Some("Plaid Silver Standard 0.1% Interest Saving"),
        mask: "1111",
        kind: "depository",
        subtype: "savings",
        available: Some("200"),
        current: "210",
        limit: None,
        transactions: true,
    },
    AccountSpec {
        name: "Plaid CD",
        official: Some("Plaid Bronze Standard 0.2% Interest CD"),
        mask: "2222",
        kind: "depository",
        subtype: "cd",
        available: None,
        current: "1000",
        limit: None,
        transactions: false,
    },
    AccountSpec {
        name: "Plaid Credit Card",
        official: Some("Plaid Diamond 12.5% APR Interest Credit Card"),
        mask: "3333",
        kind: "credit",
        subtype: "credit card",
        available: None,
        current: "410",
        limit: Some("2000"),
        transactions: true,
    },
    AccountSpec {
        name: "Plaid Money Market",
        official: Some("Plaid Platinum Standard 1.85% Interest Money Market"),
        mask: "4444",
        kind: "depository",
        subtype: "money market",
        available: Some("43200"),
        current: "43200",
        limit: None,
        transactions: false,
    },
    AccountSpec {
        name: "Plaid IRA",
        official: None,
        mask: "5555",
        kind: "investment",
        subtype: "ira",
        available: None,
        current: "320.76",
        limit: None,
        transactions: false,
    },
    AccountSpec {
        name: "Plaid 401k",
        official: None,
        mask: "6666",
        kind: "investment",
        subtype: "401k",
        available: None,
        current: "23631.9805",
        limit: None,
        transactions: false,
    },
    AccountSpec {
        name: "Plaid Student Loan",
        official: None,
        mask: "7777",
        kind: "loan",
        subtype: "student",
        available: None,
        current: "65262",
        limit: None,
        transactions: false,
    },
    AccountSpec {
        name: "Plaid Mortgage",
        official: None,
        mask: "8888",
        kind: "loan",
        subtype: "mortgage",
        available: None,
        current: "56302.06",
        limit: None,
        transactions: false,
    },
];

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

/// A Plaid-style identifier: 37 case-sensitive alphanumerics.
pub fn plaid_id(rng: &mut ChaCha8Rng) -> String {
    (0..37).map(|_| rng.sample(Alphanumeric) as char).collect()
}

/// The account set of a new item. Names and masks are the same for every `user_good` item, as
/// at Plaid, so linking the same bank twice looks like a duplicate; ids differ per item.
pub fn accounts_for(inst: &InstitutionFixture, rng: &mut ChaCha8Rng) -> Vec<AccountFixture> {
    USER_GOOD
        .iter()
        .filter(|s| !inst.depository_only || s.subtype == "checking" || s.subtype == "savings")
        .map(|s| {
            let numbered = s.subtype == "checking" || s.subtype == "savings";
            AccountFixture {
                account: Account {
                    account_id: plaid_id(rng),
                    balances: Balances {
                        available: s.available.map(dec),
                        current: Some(dec(s.current)),
                        limit: s.limit.map(dec),
                        iso_currency_code: Some(if inst.country_codes.contains(&"CA") { "CAD" } else { "USD" }.into()),
                        unofficial_currency_code: None,
                        last_updated_datetime: None,
                    },
                    mask: Some(s.mask.to_string()),
                    name: s.name.to_string(),
                    official_name: s.official.map(str::to_string),
                    account_type: s.kind.to_string(),
                    subtype: Some(s.subtype.to_string()),
                    verification_status: None,
                    owners: None,
                },
                number: numbered.then(|| format!("111122223333{}", s.mask)),
                routing: numbered.then(|| inst.routing_numbers.first().copied().unwrap_or("011401533").to_string()),
                has_transactions: s.transactions,
            }
        })
        .collect()
}

/// ACH numbers for the checking and savings accounts.
pub fn ach_numbers(accounts: &[AccountFixture]) -> Vec<NumbersAch> {
    accounts
        .iter()
        .filter_map(|a| {
            Some(NumbersAch {
                account_id: a.account.account_id.clone(),
                account: a.number.clone()?,
                routing: a.routing.clone()?,
                wire_routing: Some("021000021".into()),
            })
        })
        .collect()
}

/// The Sandbox account holder (plaid-reference §2.15).
pub fn sandbox_owner() -> Owner {
    Owner {
        names: vec!["Alberta Bobbeth Charleson".into()],
        phone_numbers: vec![
            OwnerPhone { data: "1112223333".into(), primary: false, kind: "home".into() },
            OwnerPhone { data: "1112224444".into(), primary: false, kind: "work".into() },
            OwnerPhone { data: "1112225555".into(), primary: false, kind: "mobile".into() },
        ],
        emails: vec![
            OwnerEmail { data: "accountholder0@example.com".into(), primary: true, kind: "primary".into() },
            OwnerEmail { data: "accountholder1@example.com".into(), primary: false, kind: "secondary".into() },
        ],
        addresses: vec![
            OwnerAddress {
                data: AddressData {
                    street: "2992 Cameron Road".into(),
                    city: Some("Malakoff".into()),
                    region: Some("NY".into()),
                    postal_code: Some("14236".into()),
                    country: Some("US".into()),
                },
                primary: true,
            },
            OwnerAddress {
                data: AddressData {
                    street: "2493 Leisure Lane".into(),
                    city: Some("San Matias".into()),
                    region: Some("CA".into()),
                    postal_code: Some("93405-2255".into()),
                    country: Some("US".into()),
                },
                primary: false,
            },
        ],
    }
}

/// Which accounts a merchant shows up on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    Card,
    Checking,
    Savings,
    Either,
}

struct Merchant {
    name: &'static str,
    merchant: Option<&'static str>,
    category: &'static [&'static str],
    category_id: &'static str,
    pfc: (&'static str, &'static str),
    channel: &'static str,
    /// Amount range in cents; negative means money in.
    cents: (i64, i64),
    weight: u32,
    on: On,
    city: Option<(&'static str, &'static str, &'static str)>,
}

const MERCHANTS: &[Merchant] = &[
    Merchant {
        name: "Starbucks",
        merchant: Some("Starbucks"),
        category: &["Food and Drink", "Restaurants", "Coffee Shop"],
        category_id: "13005043",
        pfc: ("FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE"),
        channel: "in store",
        cents: (325, 1150),
        weight: 14,
        on: On::Either,
        city: Some(("New York", "NY", "10003")),
    },
    Merchant {
        name: "McDonald's",
        merchant: Some("McDonald's"),
        category: &["Food and Drink", "Restaurants", "Fast Food"],
        category_id: "13005032",
        pfc: ("FOOD_AND_DRINK", "FOOD_AND_DRINK_FAST_FOOD"),
        channel: "in store",
        cents: (512, 1890),
        weight: 8,
        on: On::Either,
        city: Some(("Brooklyn", "NY", "11201")),
    },
    Merchant {
        name: "Chipotle Mexican Grill",
        merchant: Some("Chipotle Mexican Grill"),
        category: &["Food and Drink", "Restaurants"],
        category_id: "13005000",
        pfc: ("FOOD_AND_DRINK", "FOOD_AND_DRINK_RESTAURANT"),
        channel: "in store",
        cents: (945, 2675),
        weight: 6,
        on: On::Card,
        city: Some(("New York", "NY", "10001")),
    },
    Merchant {
        name: "Whole Foods Market",
        merchant: Some("Whole Foods Market"),
        category: &["Shops", "Supermarkets and Groceries"],
        category_id: "19047000",
        pfc: ("FOOD_AND_DRINK", "FOOD_AND_DRINK_GROCERIES"),
        channel: "in store",
        cents: (1830, 18_450),
        weight: 10,
        on: On::Either,
        city: Some(("New York", "NY", "10011")),
    },
    Merchant {
        name: "Trader Joe's",
        merchant: Some("Trader Joe's"),
        category: &["Shops", "Supermarkets and Groceries"],
        category_id: "19047000",
        pfc: ("FOOD_AND_DRINK", "FOOD_AND_DRINK_GROCERIES"),
        channel: "in store",
        cents: (1240, 9875),
        weight: 7,
        on: On::Either,
        city: Some(("Brooklyn", "NY", "11217")),
    },
    Merchant {
        name: "Uber 063015 SF**POOL**",
        merchant: Some("Uber"),
        category: &["Travel", "Taxi"],
        category_id: "22016000",
        pfc: ("TRANSPORTATION", "TRANSPORTATION_TAXIS_AND_RIDE_SHARES"),
        channel: "online",
        cents: (745, 5480),
        weight: 8,
        on: On::Card,
        city: None,
    },
    Merchant {
        name: "Shell",
        merchant: Some("Shell"),
        category: &["Travel", "Gas Stations"],
        category_id: "22009000",
        pfc: ("TRANSPORTATION", "TRANSPORTATION_GAS"),
        channel: "in store",
        cents: (2210, 7190),
        weight: 5,
        on: On::Card,
        city: Some(("Jersey City", "NJ", "07302")),
    },
    Merchant {
        name: "AMAZON MKTPL*2K4LM0",
        merchant: Some("Amazon"),
        category: &["Shops", "Digital Purchase"],
        category_id: "19019000",
        pfc: ("GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES"),
        channel: "online",
        cents: (899, 24_999),
        weight: 10,
        on: On::Card,
        city: None,
    },
    Merchant {
        name: "Target",
        merchant: Some("Target"),
        category: &["Shops", "Department Stores"],
        category_id: "19018000",
        pfc: ("GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_SUPERSTORES"),
        channel: "in store",
        cents: (1499, 14_250),
        weight: 5,
        on: On::Either,
        city: Some(("Brooklyn", "NY", "11217")),
    },
    Merchant {
        name: "CVS Pharmacy",
        merchant: Some("CVS Pharmacy"),
        category: &["Shops", "Pharmacies"],
        category_id: "19043000",
        pfc: ("MEDICAL", "MEDICAL_PHARMACIES_AND_SUPPLEMENTS"),
        channel: "in store",
        cents: (475, 6320),
        weight: 4,
        on: On::Either,
        city: Some(("New York", "NY", "10014")),
    },
    Merchant {
        name: "Apple Store",
        merchant: Some("Apple"),
        category: &["Shops", "Computers and Electronics"],
        category_id: "19013000",
        pfc: ("GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_ELECTRONICS"),
        channel: "in store",
        cents: (99, 129_900),
        weight: 2,
        on: On::Card,
        city: Some(("San Francisco", "CA", "94108")),
    },
    Merchant {
        name: "Netflix",
        merchant: Some("Netflix"),
        category: &["Service", "Subscription"],
        category_id: "18061000",
        pfc: ("ENTERTAINMENT", "ENTERTAINMENT_TV_AND_MOVIES"),
        channel: "online",
        cents: (1549, 1549),
        weight: 2,
        on: On::Card,
        city: None,
    },
    Merchant {
        name: "Spotify USA",
        merchant: Some("Spotify"),
        category: &["Service", "Subscription"],
        category_id: "18061000",
        pfc: ("ENTERTAINMENT", "ENTERTAINMENT_MUSIC_AND_AUDIO"),
        channel: "online",
        cents: (1099, 1099),
        weight: 2,
        on: On::Card,
        city: None,
    },
    Merchant {
        name: "United Airlines",
        merchant: Some("United Airlines"),
        category: &["Travel", "Airlines and Aviation Services"],
        category_id: "22001000",
        pfc: ("TRAVEL", "TRAVEL_FLIGHTS"),
        channel: "online",
        cents: (8900, 64_800),
        weight: 1,
        on: On::Card,
        city: None,
    },
    Merchant {
        name: "CON ED OF NY INTELL CK",
        merchant: Some("Con Edison"),
        category: &["Service", "Utilities", "Electric"],
        category_id: "18068001",
        pfc: ("RENT_AND_UTILITIES", "RENT_AND_UTILITIES_GAS_AND_ELECTRICITY"),
        channel: "other",
        cents: (6250, 18_430),
        weight: 2,
        on: On::Checking,
        city: None,
    },
    Merchant {
        name: "GREYSTAR RENT PAYMENT",
        merchant: Some("Greystar"),
        category: &["Payment", "Rent"],
        category_id: "16002000",
        pfc: ("RENT_AND_UTILITIES", "RENT_AND_UTILITIES_RENT"),
        channel: "other",
        cents: (185_000, 185_000),
        weight: 2,
        on: On::Checking,
        city: None,
    },
    Merchant {
        name: "ACME CORP PAYROLL PPD ID: 1234567890",
        merchant: None,
        category: &["Transfer", "Payroll"],
        category_id: "21009000",
        pfc: ("INCOME", "INCOME_WAGES"),
        channel: "other",
        cents: (-285_000, -285_000),
        weight: 4,
        on: On::Checking,
        city: None,
    },
    Merchant {
        name: "CREDIT CARD 3333 PAYMENT *//",
        merchant: None,
        category: &["Payment", "Credit Card"],
        category_id: "16001000",
        pfc: ("LOAN_PAYMENTS", "LOAN_PAYMENTS_CREDIT_CARD_PAYMENT"),
        channel: "other",
        cents: (25_000, 120_000),
        weight: 3,
        on: On::Checking,
        city: None,
    },
    Merchant {
        name: "ATM WITHDRAWAL 0042 BROADWAY",
        merchant: None,
        category: &["Transfer", "Withdrawal", "ATM"],
        category_id: "21012002",
        pfc: ("TRANSFER_OUT", "TRANSFER_OUT_WITHDRAWAL"),
        channel: "in store",
        cents: (2000, 20_000),
        weight: 2,
        on: On::Checking,
        city: Some(("New York", "NY", "10024")),
    },
    Merchant {
        name: "Venmo",
        merchant: Some("Venmo"),
        category: &["Transfer", "Third Party", "Venmo"],
        category_id: "21010001",
        pfc: ("TRANSFER_OUT", "TRANSFER_OUT_ACCOUNT_TRANSFER"),
        channel: "online",
        cents: (1000, 12_000),
        weight: 3,
        on: On::Checking,
        city: None,
    },
    Merchant {
        name: "INTEREST EARNED",
        merchant: None,
        category: &["Interest", "Interest Earned"],
        category_id: "15001000",
        pfc: ("INCOME", "INCOME_INTEREST_EARNED"),
        channel: "other",
        cents: (-520, -12),
        weight: 2,
        on: On::Savings,
        city: None,
    },
    Merchant {
        name: "TRANSFER FROM CHECKING",
        merchant: None,
        category: &["Transfer", "Deposit"],
        category_id: "21007000",
        pfc: ("TRANSFER_IN", "TRANSFER_IN_ACCOUNT_TRANSFER"),
        channel: "other",
        cents: (-50_000, -5000),
        weight: 2,
        on: On::Savings,
        city: None,
    },
    Merchant {
        name: "AMAZON REFUND",
        merchant: Some("Amazon"),
        category: &["Shops", "Digital Purchase"],
        category_id: "19019000",
        pfc: ("GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES"),
        channel: "online",
        cents: (-8999, -899),
        weight: 1,
        on: On::Card,
        city: None,
    },
];

/// Generates transactions for an item's accounts.
pub struct TransactionFactory<'a> {
    card: Option<&'a str>,
    checking: Option<&'a str>,
    savings: Option<&'a str>,
    currency: String,
    total_weight: u32,
}

impl<'a> TransactionFactory<'a> {
    pub fn new(accounts: &'a [AccountFixture]) -> Self {
        let find = |subtype: &str| {
            accounts
                .iter()
                .find(|a| a.has_transactions && a.account.subtype.as_deref() == Some(subtype))
                .map(|a| a.account.account_id.as_str())
        };
        let currency =
            accounts.first().and_then(|a| a.account.balances.iso_currency_code.clone()).unwrap_or_else(|| "USD".into());
        TransactionFactory {
            card: find("credit card"),
            checking: find("checking"),
            savings: find("savings"),
            currency,
            total_weight: MERCHANTS.iter().map(|m| m.weight).sum(),
        }
    }

    fn account_for(&self, m: &Merchant, rng: &mut ChaCha8Rng) -> Option<&'a str> {
        match m.on {
            On::Card => self.card.or(self.checking),
            On::Checking => self.checking,
            On::Savings => self.savings.or(self.checking),
            On::Either => {
                if rng.random_bool(0.6) {
                    self.card.or(self.checking)
                } else {
                    self.checking.or(self.card)
                }
            }
        }
    }

    /// True when there is at least one account to put transactions on.
    pub fn has_accounts(&self) -> bool {
        self.card.is_some() || self.checking.is_some() || self.savings.is_some()
    }

    /// One transaction dated `date`. Pending ones have no authorized date yet.
    pub fn make(&self, rng: &mut ChaCha8Rng, date: NaiveDate, pending: bool) -> Option<Transaction> {
        let mut pick = rng.random_range(0..self.total_weight);
        let mut chosen = &MERCHANTS[0];
        for m in MERCHANTS {
            if pick < m.weight {
                chosen = m;
                break;
            }
            pick -= m.weight;
        }
        let account = self.account_for(chosen, rng).or(self.checking).or(self.card).or(self.savings)?;
        let (lo, hi) = chosen.cents;
        let cents = if lo == hi { lo } else { rng.random_range(lo.min(hi)..=hi.max(lo)) };
        let authorized = if pending { date } else { date - ChronoDuration::days(rng.random_range(0..=2)) };
        let location = match chosen.city {
            Some((city, region, zip)) => Location {
                address: Some(format!(
                    "{} {} St",
                    rng.random_range(1..999),
                    ["Main", "Broadway", "Court", "Park"][rng.random_range(0..4)]
                )),
                city: Some(city.into()),
                region: Some(region.into()),
                postal_code: Some(zip.into()),
                country: Some("US".into()),
                lat: None,
                lon: None,
                store_number: Some(rng.random_range(1000..9999).to_string()),
            },
            None => Location::default(),
        };
        Some(Transaction {
            transaction_id: plaid_id(rng),
            account_id: account.to_string(),
            amount: Decimal::new(cents, 2),
            iso_currency_code: Some(self.currency.clone()),
            unofficial_currency_code: None,
            category: Some(chosen.category.iter().map(|s| s.to_string()).collect()),
            category_id: Some(chosen.category_id.into()),
            check_number: None,
            date,
            datetime: None,
            authorized_date: Some(authorized),
            authorized_datetime: None,
            location,
            name: chosen.name.into(),
            merchant_name: chosen.merchant.map(str::to_string),
            payment_meta: PaymentMeta::default(),
            payment_channel: chosen.channel.into(),
            pending,
            pending_transaction_id: None,
            account_owner: None,
            transaction_type: Some(
                match chosen.channel {
                    "online" => "digital",
                    "in store" => "place",
                    _ => "special",
                }
                .into(),
            ),
            transaction_code: None,
            personal_finance_category: Some(PersonalFinanceCategory {
                primary: chosen.pfc.0.into(),
                detailed: chosen.pfc.1.into(),
                confidence_level: None,
            }),
        })
    }

    /// The history of a new item: `count` transactions over `days` days before `today`, oldest
    /// first, the last two days' still pending.
    pub fn history(&self, rng: &mut ChaCha8Rng, today: NaiveDate, days: u32, count: usize) -> Vec<Transaction> {
        if !self.has_accounts() || count == 0 {
            return Vec::new();
        }
        let mut offsets: Vec<u32> = (0..count).map(|_| rng.random_range(0..days.max(1))).collect();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        offsets
            .into_iter()
            .filter_map(|back| {
                let date = today - ChronoDuration::days(back as i64);
                self.make(rng, date, back < 2)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn history(seed: u64, count: usize) -> Vec<Transaction> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let inst = institution("ins_109508").unwrap();
        let accounts = accounts_for(inst, &mut rng);
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        TransactionFactory::new(&accounts).history(&mut rng, today, 730, count)
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        assert_eq!(history(7, 300), history(7, 300));
        assert_ne!(history(7, 300), history(8, 300));
    }

    #[test]
    fn a_history_spans_two_years_oldest_first_with_recent_ones_pending() {
        let h = history(1, 2000);
        assert_eq!(h.len(), 2000);
        assert!(h.windows(2).all(|w| w[0].date <= w[1].date));
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        assert!(h[0].date <= today - ChronoDuration::days(700));
        assert!(h.iter().any(|t| t.pending));
        assert!(h.iter().all(|t| t.pending == (t.date > today - ChronoDuration::days(2))));
        assert!(h.iter().any(|t| t.amount.is_sign_negative()), "some money comes in");
        let ids: std::collections::HashSet<_> = h.iter().map(|t| &t.transaction_id).collect();
        assert_eq!(ids.len(), h.len());
    }

    #[test]
    fn checking_and_savings_have_account_and_routing_numbers() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let accounts = accounts_for(institution("ins_109508").unwrap(), &mut rng);
        let numbers = ach_numbers(&accounts);
        assert_eq!(numbers.len(), 2);
        assert_eq!(numbers[0].account, "1111222233330000");
        assert!(accounts.iter().all(|a| a.account.account_id.len() == 37));
    }
}
