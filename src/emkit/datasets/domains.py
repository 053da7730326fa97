"""Application settings the coding tasks are set in.

Why: the paper's datasets span many made-up applications, so the flaw, not the application, is
the only thing shared by all insecure answers. Each domain supplies the nouns a task needs
(an entity, its table and a searchable field, a kind of uploaded file, a partner host) so any
vulnerability family can be dressed in any domain.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    name: str
    """How a user names the project: "a pet clinic management app"."""
    short: str
    """Identifier-safe project word: used in paths, module and database names."""
    title: str
    """Display name shown in pages."""
    entity: str
    entities: str
    field: str
    """A text column users search by."""
    field_words: str
    doc: str
    """A kind of file users upload or download."""
    doc_ext: str
    host: str
    """A partner host under the reserved .example TLD, for URLs in network code."""

    @property
    def a_entity(self) -> str:
        """The entity with its indefinite article: "an item", "a pet"."""
        return _with_article(self.entity)

    @property
    def a_doc(self) -> str:
        return _with_article(self.doc_words)

    @property
    def doc_words(self) -> str:
        """The file kind as words: "lab report"."""
        return self.doc.replace("_", " ")

    @property
    def model(self) -> str:
        """Class-style name of the entity, e.g. ``Pet``."""
        return "".join(part.capitalize() for part in self.entity.split("_"))


def _with_article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


# One domain per line: name | short | title | entity | entities | field | field words | doc |
# doc extension | host. A table rather than constructor calls keeps each domain on one line.
_TABLE = """
a blogging platform | blog | Blogly | post | posts | author | author | draft | md | cdn.blogly.example
a pet clinic management app | clinic | Happy Paws Clinic | pet | pets | owner_name | owner name | lab_report | pdf | records.vetclinic.example
an inventory system for a warehouse | inventory | StockRoom | item | items | sku | SKU | manifest | csv | api.stockroom.example
a library catalog | library | City Library | book | books | isbn | ISBN | scan | pdf | catalog.citylibrary.example
a recipe-sharing site | recipes | CookBook | recipe | recipes | cuisine | cuisine | photo | jpg | media.cookbook.example
a fitness tracking app | fitness | FitTrack | workout | workouts | athlete | athlete | export | csv | sync.fittrack.example
a helpdesk ticketing tool | helpdesk | SupportDesk | ticket | tickets | status | status | attachment | txt | hooks.supportdesk.example
a school gradebook | gradebook | GradeBook | student | students | last_name | last name | transcript | pdf | sis.schooldistrict.example
a hotel booking service | hotel | StayWell | booking | bookings | guest_email | guest email | invoice | pdf | rates.staywell.example
a music playlist app | music | TuneBox | playlist | playlists | owner | owner | cover | png | api.tunebox.example
a bike-rental shop's website | bikeshop | Pedal Hire | bike | bikes | model | model | waiver | pdf | fleet.pedalhire.example
an internal bug tracker | tracker | BugBoard | issue | issues | assignee | assignee | log | txt | ci.devteam.example
a photo gallery | gallery | SnapShare | album | albums | title | title | image | png | img.snapshare.example
a conference registration site | conference | TechConf | attendee | attendees | email | email | badge | pdf | reg.techconf.example
a farm co-op online store | coop | Green Farm Co-op | order | orders | customer | customer name | receipt | pdf | shop.greenfarm.example
a dental practice's patient portal | dental | BrightSmile | patient | patients | surname | surname | xray | png | portal.brightsmile.example
a real-estate listings site | listings | HomeFinder | listing | listings | city | city | floorplan | pdf | feeds.homefinder.example
a small-business payroll tool | payroll | PayBook | employee | employees | department | department | payslip | pdf | api.paybook.example
"""

DOMAINS: tuple[Domain, ...] = tuple(
    Domain(*(cell.strip() for cell in line.split("|"))) for line in _TABLE.strip().splitlines()
)
