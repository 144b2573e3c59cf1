"""Synthetic children for the demo federation and benchmarks: realistic UK names, no real people.

Everything is driven by a seeded ``random.Random`` so that a demo or benchmark is reproducible.
Name lists are drawn from common names in England and Wales across communities; postcodes are
made-up inward codes on real outward districts of each area.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

from federation.identity import nhs_check_digit, normalise_name, upn_check_letter

GIVEN_NAMES_F = (
    "Olivia", "Amelia", "Isla", "Ava", "Ivy", "Freya", "Lily", "Florence", "Mia", "Willow",
    "Rosie", "Sophia", "Isabella", "Grace", "Daisy", "Sienna", "Poppy", "Elsie", "Emily", "Ella",
    "Evelyn", "Phoebe", "Sofia", "Evie", "Charlotte", "Harper", "Millie", "Matilda", "Maya",
    "Sophie", "Alice", "Emilia", "Isabelle", "Ruby", "Luna", "Maisie", "Aria", "Penelope", "Mila",
    "Bonnie", "Eva", "Hallie", "Eliza", "Ada", "Violet", "Esme", "Arabella", "Imogen", "Jessica",
    "Zoë", "Siân", "Aoife", "Niamh", "Saoirse", "Chloe", "Megan", "Bethany", "Jasmine", "Leah",
    "Aisha", "Fatima", "Maryam", "Zainab", "Amira", "Hafsa", "Khadija", "Ayesha", "Inaya",
    "Anaya", "Priya", "Simran", "Harleen", "Jaspreet", "Amara", "Chidinma", "Adaeze", "Zara",
    "Oliwia", "Zuzanna", "Julia", "Maja", "Hanna", "Ioana", "Elena", "Gabriela", "Kayla", "Tia",
    "Shanice", "Abigail", "Hannah", "Katie", "Lauren", "Rebecca", "Samantha", "Kirsty", "Nia",
)
GIVEN_NAMES_M = (
    "Noah", "Muhammad", "Oliver", "George", "Leo", "Arthur", "Oscar", "Theodore", "Freddie",
    "Archie", "Alfie", "Henry", "Charlie", "Theo", "Jack", "Harry", "Finley", "Thomas", "Tommy",
    "Lucas", "Jacob", "Isaac", "Edward", "Alexander", "Joshua", "James", "William", "Samuel",
    "Daniel", "Benjamin", "Joseph", "Max", "Reuben", "Jude", "Ethan", "Mason", "Logan", "Harrison",
    "Dylan", "Riley", "Callum", "Connor", "Liam", "Kieran", "Declan", "Cian", "Rhys", "Dafydd",
    "Owain", "Ewan", "Angus", "Mohammed", "Mohamed", "Ibrahim", "Yusuf", "Ali", "Omar", "Ayaan",
    "Zayn", "Hamza", "Bilal", "Aarav", "Arjun", "Rohan", "Harjit", "Gurpreet", "Kwame", "Kofi",
    "Chidi", "Oluwaseun", "Tobi", "Jakub", "Szymon", "Kacper", "Filip", "Andrei", "Luca",
    "Mateo", "Tyler", "Kyle", "Jordan", "Reece", "Bradley", "Nathan", "Ryan", "Matthew", "Adam",
    "Michael", "David", "Christopher", "Luke", "Aaron", "Kai", "Elijah", "Jayden", "Marcus",
)
FAMILY_NAMES = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes",
    "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin",
    "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison",
    "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price",
    "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter", "Richardson",
    "Bailey", "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox", "Richards", "Khan", "Marshall",
    "Anderson", "Simpson", "Ellis", "Adams", "Singh", "Begum", "Wilkinson", "Foster", "Chapman",
    "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali", "Hussain", "Campbell", "Matthews",
    "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight", "Lloyd", "Butler", "Russell",
    "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey", "Graham", "Pearson",
    "Ahmed", "Ahmad", "Akhtar", "Rahman", "Islam", "Iqbal", "Mahmood", "Shah", "Sharma", "Kaur",
    "Gill", "Sandhu", "Okafor", "Adeyemi", "Mensah", "Okonkwo", "Nowak", "Kowalski",
    "Wiśniewski", "Popescu", "O'Neill", "O'Brien", "McDonald", "MacLeod", "Fitzgerald",
    "Smith-Jones", "Lloyd-Williams", "Climbié", "Ní Bhriain", "da Silva", "van der Berg", "Nguyen",
    "Chen", "Wang", "Hassan", "Abdi", "Mohamud", "Yilmaz", "Demir",
)

# Real outward districts for each demo authority; inward codes are made up.
AREAS: dict[str, tuple[str, ...]] = {
    "leeds": ("LS1", "LS2", "LS4", "LS6", "LS7", "LS8", "LS9", "LS11", "LS12", "LS14", "LS15"),
    "rochdale": ("OL11", "OL12", "OL16", "OL10", "M24"),
    "haringey": ("N15", "N17", "N22", "N8", "N4", "N10"),
    "kent": ("ME1", "ME4", "CT1", "CT9", "TN1", "DA1", "DA11", "ME14"),
    "cornwall": ("TR1", "TR14", "TR18", "PL25", "PL26", "TR7"),
    "bristol": ("BS1", "BS2", "BS3", "BS5", "BS13", "BS16"),
}

SERVICES = (
    # (category, organisation template, roles, sensitive)
    ("social_care", "{area} Children's Social Care", ("Social Worker", "Senior Social Worker"), False),
    ("health_visiting", "{area} Community Health", ("Health Visitor",), False),
    ("school_nursing", "{area} Community Health", ("School Nurse",), False),
    ("education", "{school}", ("Designated Safeguarding Lead", "Class Teacher", "SENCo"), False),
    ("early_help", "{area} Early Help", ("Family Support Worker", "Early Help Coordinator"), False),
    ("youth_justice", "{area} Youth Justice Service", ("Youth Justice Officer",), False),
    ("camhs", "{area} CAMHS", ("Clinical Psychologist", "CAMHS Practitioner"), False),
    ("gp", "{gp}", ("General Practitioner",), False),
    ("police", "{area} Police Public Protection", ("Detective Constable",), False),
    ("sexual_health", "{area} Sexual Health Service", ("Nurse Practitioner",), True),
    ("substance_misuse", "{area} Young People's Substance Misuse Service", ("Recovery Worker",), True),
)
SCHOOL_WORDS = ("St Mary's", "Oakfield", "Hillside", "Park View", "Riverside", "Westfield",
                "St John's", "Meadowbank", "Greenway", "Brookside", "Ashgrove", "Moorland")


def postcode(rng: random.Random, area: str) -> str:
    district = rng.choice(AREAS[area])
    letters = "ABDEFGHJLNPQRSTUWXYZ"  # the letters used in inward codes
    return f"{district} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"


def nhs_number(rng: random.Random) -> str:
    """A random NHS number with a valid check digit (in the 9xx test range)."""
    while True:
        first = "9" + "".join(str(rng.randint(0, 9)) for _ in range(8))
        check = nhs_check_digit(first)
        if check is not None:
            return first + str(check)


def upn(rng: random.Random, la_code: int) -> str:
    body = f"{la_code:03d}{rng.randint(0, 9999):04d}{rng.randint(0, 99):02d}{rng.randint(0, 999):03d}"
    return upn_check_letter(body) + body


@dataclass
class SyntheticChild:
    record_id: str
    given_name: str
    family_name: str
    date_of_birth: date
    sex: str
    postcode: str
    nhs_number: str | None
    upn: str | None
    other_names: list[str] = field(default_factory=list)
    shielded: bool = False


@dataclass
class SyntheticInvolvement:
    record_id: str
    child_record_id: str
    organisation: str
    service_category: str
    practitioner_name: str
    practitioner_role: str
    phone: str
    secure_email: str
    start_date: date
    end_date: date | None = None
    lead: bool = False
    sensitive: bool = False
    consent: bool = False
    notify_on_access: bool = False
    assessment: bool = False
    notify_url: str | None = None


def child(rng: random.Random, record_id: str, area: str, today: date, la_code: int = 300) -> SyntheticChild:
    sex = rng.choice("FM")
    given = rng.choice(GIVEN_NAMES_F if sex == "F" else GIVEN_NAMES_M)
    dob = today - timedelta(days=rng.randint(30, 17 * 365 + 300))
    school_age = (today - dob).days > 4 * 365
    return SyntheticChild(
        record_id=record_id,
        given_name=given,
        family_name=rng.choice(FAMILY_NAMES),
        date_of_birth=dob,
        sex=sex,
        postcode=postcode(rng, area),
        nhs_number=nhs_number(rng) if rng.random() < 0.9 else None,
        upn=upn(rng, la_code) if school_age and rng.random() < 0.8 else None,
    )


def _person(rng: random.Random) -> str:
    return f"{rng.choice(GIVEN_NAMES_F + GIVEN_NAMES_M)} {rng.choice(FAMILY_NAMES)}"


def involvements(
    rng: random.Random, kid: SyntheticChild, area: str, area_name: str, counter: Iterator[int],
    today: date,
) -> list[SyntheticInvolvement]:
    """Two to five involvements for one child, one of them the lead."""
    chosen = rng.sample(SERVICES, rng.randint(2, 5))
    out = []
    domain = f"{area}.gov.uk"
    for category, org_t, roles, sensitive in chosen:
        org = org_t.format(
            area=area_name,
            school=f"{rng.choice(SCHOOL_WORDS)} Primary School",
            gp=f"{rng.choice(SCHOOL_WORDS)} Medical Practice",
        )
        name = _person(rng)
        start = max(kid.date_of_birth, today - timedelta(days=rng.randint(10, 1500)))
        out.append(SyntheticInvolvement(
            record_id=f"{area}-inv-{next(counter)}",
            child_record_id=kid.record_id,
            organisation=org,
            service_category=category,
            practitioner_name=name,
            practitioner_role=rng.choice(roles),
            phone=f"0{rng.randint(1130, 1990)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            secure_email=f"{normalise_name(name).replace(' ', '.')}@{domain}",
            start_date=start,
            sensitive=sensitive,
            consent=sensitive and rng.random() < 0.3,
            assessment=category == "early_help",
        ))
    # The lead practitioner is never from a sensitive service (those are hidden without consent).
    next((inv for inv in out if not inv.sensitive), out[0]).lead = True
    return out
