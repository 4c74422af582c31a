"""Static vocabularies for the fake dataset: Baltic people, salons, streets and laser devices."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Country:
    """Everything the generator needs to produce plausible records for one Baltic country."""

    code: str  # ISO 3166-1 alpha-2, as in RQ_RESIDENCE_COUNTRY
    name: str  # as in crm.address COUNTRY
    female_first: tuple[str, ...]
    male_first: tuple[str, ...]
    # (male surname, female surname); Estonian surnames are not gendered.
    surnames: tuple[tuple[str, str], ...]
    home_domains: tuple[str, ...]
    tld: str
    languages: tuple[tuple[str, ...], ...]
    cities: tuple[tuple[str, str, str], ...]  # (city, region, postal code prefix)
    streets: tuple[str, ...]
    salon_words: tuple[str, ...]
    legal_forms: tuple[str, ...]
    posts: tuple[str, ...]


ESTONIA = Country(
    code="EE",
    name="Estonia",
    female_first=(
        "Mari", "Kristiina", "Tiina", "Liis", "Kadri", "Triin", "Kertu", "Helen", "Maarja",
        "Anneli", "Pille", "Katrin", "Merike", "Eve", "Ülle", "Kärt", "Sirje", "Külli", "Rutt",
        "Getter", "Grete", "Õie", "Evelin", "Marju",
    ),
    male_first=(
        "Jüri", "Andres", "Mart", "Toomas", "Margus", "Priit", "Tõnu", "Rein", "Urmas", "Indrek",
        "Märt", "Siim", "Kaarel", "Ülo",
    ),
    surnames=tuple(
        (name, name)
        for name in (
            "Tamm", "Saar", "Sepp", "Mägi", "Kask", "Kukk", "Rebane", "Ilves", "Pärn", "Koppel",
            "Lepik", "Oja", "Kuusk", "Karu", "Raudsepp", "Vaher", "Lõhmus", "Põder", "Jõgi",
            "Kivi", "Mölder", "Laur", "Vares", "Sild", "Ots", "Kõiv", "Luik", "Toom", "Järv",
        )
    ),
    home_domains=("gmail.com", "mail.ee", "hot.ee", "online.ee"),
    tld="ee",
    languages=(("et",), ("et", "en"), ("et", "ru"), ("et", "en", "fi"), ("ru", "et")),
    cities=(
        ("Tallinn", "Harju maakond", "10"), ("Tallinn", "Harju maakond", "13"),
        ("Tartu", "Tartu maakond", "50"), ("Pärnu", "Pärnu maakond", "80"),
        ("Narva", "Ida-Viru maakond", "20"), ("Viljandi", "Viljandi maakond", "71"),
        ("Rakvere", "Lääne-Viru maakond", "44"), ("Kuressaare", "Saare maakond", "93"),
        ("Haapsalu", "Lääne maakond", "90"), ("Jõhvi", "Ida-Viru maakond", "41"),
    ),
    streets=(
        "Narva mnt", "Tartu mnt", "Pärnu mnt", "Rüütli tn", "Riia tn", "Tähe tn", "Pikk tn",
        "Lai tn", "Kesk tn", "Mere pst", "Estonia pst", "Aia tn", "Vabaduse pst", "Jõe tn",
    ),
    salon_words=("Ilusalong", "Nahakliinik", "Iluravila", "Laserkliinik", "Ilustuudio",
                 "Esteetikakliinik"),
    legal_forms=("OÜ", "AS", "OÜ", "OÜ"),
    posts=("Salongi juhataja", "Kosmeetik", "Dermatoloog", "Juhatuse liige", "Administraator",
           "Laseroperaator", "Omanik"),
)

LATVIA = Country(
    code="LV",
    name="Latvia",
    female_first=(
        "Kristīne", "Ilze", "Līga", "Inese", "Dace", "Anna", "Laura", "Sanita", "Zane", "Evija",
        "Ieva", "Baiba", "Agnese", "Māra", "Elīna", "Gunta",
    ),
    male_first=("Jānis", "Andris", "Mārtiņš", "Edgars", "Artūrs", "Kārlis", "Raimonds", "Uldis",
                "Aivars", "Normunds"),
    surnames=(
        ("Bērziņš", "Bērziņa"), ("Kalniņš", "Kalniņa"), ("Ozols", "Ozola"),
        ("Liepiņš", "Liepiņa"), ("Krūmiņš", "Krūmiņa"), ("Jansons", "Jansone"),
        ("Vītols", "Vītola"), ("Kļaviņš", "Kļaviņa"), ("Pētersons", "Pētersone"),
        ("Zariņš", "Zariņa"), ("Ābele", "Ābele"), ("Siliņš", "Siliņa"), ("Lapiņš", "Lapiņa"),
        ("Balodis", "Balode"), ("Eglītis", "Eglīte"),
    ),
    home_domains=("gmail.com", "inbox.lv", "apollo.lv", "inbox.lv"),
    tld="lv",
    languages=(("lv",), ("lv", "en"), ("lv", "ru"), ("ru", "lv"), ("lv", "en", "de")),
    cities=(
        ("Rīga", "Rīga", "LV-10"), ("Rīga", "Rīga", "LV-15"), ("Daugavpils", "Daugavpils", "LV-54"),
        ("Liepāja", "Liepāja", "LV-34"), ("Jelgava", "Jelgava", "LV-30"),
        ("Jūrmala", "Jūrmala", "LV-20"), ("Ventspils", "Ventspils", "LV-36"),
        ("Valmiera", "Valmieras novads", "LV-42"),
    ),
    streets=(
        "Brīvības iela", "Elizabetes iela", "Krišjāņa Barona iela", "Tērbatas iela",
        "Dzirnavu iela", "Lāčplēša iela", "Ganību dambis", "Skolas iela", "Rīgas iela",
    ),
    salon_words=("Skaistumkopšanas salons", "Lāzerklīnika", "Ādas klīnika", "Estētikas centrs",
                 "Skaistuma studija"),
    legal_forms=("SIA", "SIA", "AS"),
    posts=("Salona vadītāja", "Kosmetoloģe", "Dermatologs", "Valdes locekle", "Administratore",
           "Īpašniece"),
)

LITHUANIA = Country(
    code="LT",
    name="Lithuania",
    female_first=(
        "Žydrūnė", "Rūta", "Aistė", "Eglė", "Ieva", "Jurgita", "Gintarė", "Kristina", "Laura",
        "Asta", "Vaida", "Inga", "Agnė", "Živilė",
    ),
    male_first=("Jonas", "Mindaugas", "Tomas", "Darius", "Vytautas", "Andrius", "Paulius",
                "Giedrius", "Žilvinas"),
    surnames=(
        ("Kazlauskas", "Kazlauskienė"), ("Jankauskas", "Jankauskienė"),
        ("Petrauskas", "Petrauskaitė"), ("Stankevičius", "Stankevičienė"),
        ("Vasiliauskas", "Vasiliauskienė"), ("Žukauskas", "Žukauskaitė"),
        ("Butkus", "Butkienė"), ("Paulauskas", "Paulauskienė"), ("Urbonas", "Urbonienė"),
        ("Kavaliauskas", "Kavaliauskaitė"), ("Šimkus", "Šimkienė"), ("Navickas", "Navickienė"),
    ),
    home_domains=("gmail.com", "inbox.lt", "one.lt", "gmail.com"),
    tld="lt",
    languages=(("lt",), ("lt", "en"), ("lt", "ru"), ("lt", "pl"), ("lt", "en", "ru")),
    cities=(
        ("Vilnius", "Vilniaus apskritis", "LT-01"), ("Vilnius", "Vilniaus apskritis", "LT-08"),
        ("Kaunas", "Kauno apskritis", "LT-44"), ("Klaipėda", "Klaipėdos apskritis", "LT-92"),
        ("Šiauliai", "Šiaulių apskritis", "LT-76"), ("Panevėžys", "Panevėžio apskritis", "LT-35"),
        ("Palanga", "Klaipėdos apskritis", "LT-00"),
    ),
    streets=(
        "Gedimino pr.", "Laisvės al.", "Savanorių pr.", "Konstitucijos pr.", "Vilniaus g.",
        "Pylimo g.", "Taikos pr.", "Žalgirio g.", "Ukmergės g.",
    ),
    salon_words=("Grožio studija", "Lazerių klinika", "Odos klinika", "Estetinės medicinos centras",
                 "Grožio salonas"),
    legal_forms=("UAB", "UAB", "MB"),
    posts=("Salono vadovė", "Kosmetologė", "Dermatologė", "Direktorė", "Administratorė",
           "Savininkė"),
)

COUNTRIES: tuple[Country, ...] = (ESTONIA, LATVIA, LITHUANIA)
COUNTRY_WEIGHTS: tuple[int, ...] = (5, 3, 3)

SALON_SUFFIX_WORDS: tuple[str, ...] = (
    "Aura", "Bella", "Derma", "Lumi", "Nova", "Silk", "Skin Studio", "Glow", "Vita", "Elite",
    "Balti", "Harmony", "Pure", "Estetica", "Medica", "Laser Line", "Linda", "Sol", "Amber",
)

SOURCES: tuple[str, ...] = ("WEB", "CALL", "EMAIL", "PARTNER", "TRADE_SHOW", "OTHER", "WEBFORM")
COMPANY_TYPES: tuple[str, ...] = ("CUSTOMER", "CUSTOMER", "CUSTOMER", "PARTNER", "OTHER")
NEWSLETTERS: tuple[str, ...] = ("service_news", "promotions", "training_events")
COMMENT_SNIPPETS: tuple[str, ...] = (
    "Met at Beauty Baltics fair.", "Prefers calls after 14:00.", "Asked for a training quote.",
    "Interested in a second device.", "Pays invoices late, remind early.",
    "Referred by a partner clinic.", "Wants Russian-language materials.", "",
)


@dataclass(frozen=True)
class Brand:
    """A laser/aesthetic device manufacturer with its models and handpieces."""

    name: str
    producer: str
    serial_prefix: str
    models: tuple[str, ...]
    handpieces: tuple[str, ...]


BRANDS: tuple[Brand, ...] = (
    Brand("Candela", "Candela Corporation", "CA",
          ("GentleMax Pro", "GentleMax Pro Plus", "Vbeam Perfecta", "PicoWay", "Frax Pro"),
          ("12 mm", "15 mm", "18 mm", "Alex 755", "Nd:YAG 1064", "Frax 1550", "Resolve 1064")),
    Brand("Cynosure", "Cynosure LLC", "CY",
          ("Elite iQ", "PicoSure Pro", "Potenza", "SculpSure", "Icon"),
          ("Zoom 2-7 mm", "Focus lens", "10 mm", "Nd:YAG 1064", "RF 25-pin")),
    Brand("Lumenis", "Lumenis Be Ltd.", "LU",
          ("Stellar M22", "LightSheer Desire", "UltraPulse", "Splendor X", "NuEra Tight"),
          ("IPL 515", "IPL 560", "IPL 590", "ResurFX", "Q-Switched Nd:YAG", "ET 9x9 mm")),
    Brand("Alma Lasers", "Alma Lasers Ltd.", "AL",
          ("Soprano ICE Platinum", "Soprano Titanium", "Harmony XL Pro", "Opus Plasma"),
          ("Trio 4 cm2", "Speed 2 cm2", "Alex 755", "ClearSkin", "Dye-VL")),
    Brand("Cutera", "Cutera Inc.", "CU",
          ("excel V+", "truSculpt iD", "enlighten III", "xeo"),
          ("Genesis 10 mm", "Laser Genesis", "Pearl Fractional", "LimeLight IPL")),
    Brand("Fotona", "Fotona d.o.o.", "FO",
          ("SP Dynamis", "StarWalker MaQX", "TimeWalker Fotona4D", "Dynamis Pro"),
          ("R33", "PS03", "FS01", "Er:YAG 2940", "Nd:YAG 1064", "SMOOTH R11")),
    Brand("Quanta System", "Quanta System S.p.A.", "QS",
          ("Q-Plus Evo", "Discovery Pico", "Thunder MT", "Light Pro"),
          ("Zoom 2-5 mm", "Fractional 7 mm", "Alex 755", "Nd:YAG 1064")),
    Brand("Asclepion", "Asclepion Laser Technologies GmbH", "AS",
          ("MeDioStar Monolith", "PicoStar", "Juliet", "Quadrostar Pro"),
          ("XL 15 mm", "Compact 8 mm", "Pico 532", "Erbium 2940")),
)

DEVICE_ROOMS: tuple[str, ...] = ("", "", "Room 1", "Room 2", "Treatment room A", "2nd floor",
                                 "Storage")
