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
a community garden plot planner | garden | PlotShare | plot | plots | gardener | gardener | layout | png | maps.plotshare.example
a food-truck ordering app | foodtruck | RollingBites | dish | dishes | category | category | menu | pdf | orders.rollingbites.example
a volunteer shift scheduler | volunteers | HelpingHands | shift | shifts | coordinator | coordinator | roster | csv | sched.helpinghands.example
a podcast hosting service | podcasts | CastHub | episode | episodes | show_name | show name | transcript | txt | feeds.casthub.example
a car-sharing fleet dashboard | carshare | ShareRide | vehicle | vehicles | plate | licence plate | inspection | pdf | telemetry.shareride.example
a museum collection database | museum | Civic Museum | artifact | artifacts | era | era | catalogue_card | pdf | archive.civicmuseum.example
a wedding planning site | wedding | EverAfter | guest | guests | table_name | table name | seating_chart | pdf | rsvp.everafter.example
a parking garage management system | parking | ParkSmart | permit | permits | zone | zone | receipt | pdf | gates.parksmart.example
a language-learning flashcard app | flashcards | WordWise | card | cards | deck | deck | audio_clip | mp3 | media.wordwise.example
a brewery's batch tracking tool | brewery | HopLog | batch | batches | style | beer style | brew_sheet | csv | sensors.hoplog.example
a coworking space booking portal | cowork | DeskHub | desk | desks | floor | floor | contract | pdf | access.deskhub.example
a veterinary lab results service | vetlab | LabPaws | sample | samples | species | species | result_sheet | pdf | results.labpaws.example
an online chess club | chess | KnightClub | game | games | opening | opening | pgn_file | pgn | api.knightclub.example
a city bike-lane reporting app | bikelanes | SafeLanes | report | reports | street | street | photo | jpg | uploads.safelanes.example
a board-game café reservation site | boardgames | Dice and Brew | reservation | reservations | party_name | party name | menu | pdf | book.diceandbrew.example
a nonprofit donor CRM | donors | GiveTrack | donor | donors | region | region | pledge_form | pdf | crm.givetrack.example
a plant nursery's stock app | nursery | LeafLine | plant | plants | genus | genus | care_sheet | pdf | stock.leafline.example
an apartment maintenance request portal | maintenance | FixIt Home | repair | repairs | unit | unit number | photo | jpg | ops.fixithome.example
a movie club voting app | movieclub | ReelVote | film | films | director | director | poster | png | api.reelvote.example
a tutoring marketplace | tutoring | TutorMatch | slot | slots | subject | subject | worksheet | pdf | match.tutormatch.example
a laboratory equipment booking tool | labbook | BenchTime | instrument | instruments | lab_room | lab room | manual | pdf | booking.benchtime.example
a church newsletter mailer | newsletter | Parish News | notice | notices | section | section | bulletin | pdf | mail.parishnews.example
a dog-walking service app | dogwalk | WalkiesNow | walk | walks | walker | walker | route_map | gpx | tracks.walkiesnow.example
a print shop's order system | printshop | InkWorks | proof | proofs | paper_type | paper type | artwork | pdf | upload.inkworks.example
a sports league stats site | league | SundayLeague | fixture | fixtures | team | team | scoresheet | csv | stats.sundayleague.example
a personal finance budgeting app | budget | PennyWise | expense | expenses | merchant | merchant | statement | csv | import.pennywise.example
a hospital shift handover tool | handover | WardNotes | handover | handovers | ward | ward | summary | pdf | ehr.wardnotes.example
a solar panel monitoring portal | solar | SunMeter | reading | readings | site_code | site code | export | csv | meters.sunmeter.example
a craft marketplace | crafts | MakerMart | listing | listings | maker | maker | product_photo | jpg | cdn.makermart.example
a driving school scheduler | drivingschool | LearnToDrive | appointment | appointments | instructor | instructor | progress_card | pdf | cal.learntodrive.example
a genealogy research site | genealogy | RootsTree | person | people | family_name | family name | record_scan | png | records.rootstree.example
a theatre box office | boxoffice | Curtain Call | seat | seats | performance | performance | ticket_stub | pdf | sales.curtaincall.example
a freight shipment tracker | freight | CargoTrail | shipment | shipments | carrier | carrier | bill_of_lading | pdf | edi.cargotrail.example
a research paper reading list | papers | CiteShelf | paper | papers | venue | venue | preprint | pdf | mirror.citeshelf.example
a climbing gym membership app | climbing | BoulderBase | member | members | belay_level | belay level | waiver | pdf | checkin.boulderbase.example
a water utility meter service | waterworks | AquaRead | meter | meters | district | district | usage_report | csv | reads.aquaread.example
a student club events board | clubs | CampusClubs | event | events | organiser | organiser | flyer | png | board.campusclubs.example
a home-brewed IoT thermostat dashboard | thermostat | WarmNest | device | devices | room | room | firmware_log | txt | hub.warmnest.example
a cooking school booking site | cookingschool | ChefSchool | enrolment | enrolments | chef | chef | handout | pdf | enrol.chefschool.example
an HR recruiting pipeline tool | recruiting | HireFlow | candidate | candidates | position | position | resume | pdf | jobs.hireflow.example
a bookshop's loyalty program | loyalty | PageRewards | customer | customers | tier | tier | voucher | pdf | rewards.pagerewards.example
a city parks permit office | parks | ParkPermits | application | applications | park_name | park name | site_plan | pdf | permits.cityparks.example
a trivia game backend | trivia | TriviaNight | question | questions | topic | topic | answer_key | csv | play.trivianight.example
a van-life campsite finder | campsites | CampFinder | campsite | campsites | county | county | trail_map | gpx | maps.campfinder.example
a translation agency's job board | translations | LinguaDesk | assignment | assignments | language | target language | source_text | docx | jobs.linguadesk.example
a warehouse robot telemetry service | robots | BotFleet | robot | robots | firmware | firmware version | trace | log | telemetry.botfleet.example
an astronomy club's observation log | astronomy | StarLog | observation | observations | constellation | constellation | sky_chart | png | data.starlog.example
a kindergarten parent portal | kindergarten | LittleSteps | child | children | group_name | group name | newsletter | pdf | parents.littlesteps.example
a second-hand electronics shop | electronics | ReTech | device | devices | brand | brand | test_report | pdf | stock.retech.example
a marathon registration site | marathon | CityRun | runner | runners | bib_number | bib number | certificate | pdf | timing.cityrun.example
a legal document management tool | legaldocs | CaseFile | matter | matters | client | client | filing | pdf | dms.casefile.example
an animal shelter adoption site | shelter | SecondChance | animal | animals | breed | breed | vet_record | pdf | adopt.secondchance.example
a cinema snack-bar point of sale | snackbar | PopCorner | sale | sales | register_id | register | shift_report | csv | pos.popcorner.example
a community radio playlist logger | radio | OpenAir FM | track | tracks | artist | artist | playout_log | txt | logs.openairfm.example
a bakery pre-order site | bakery | Morning Crumb | preorder | preorders | pickup_day | pickup day | price_list | pdf | orders.morningcrumb.example
a software license inventory | licenses | SeatCount | subscription | subscriptions | vendor | vendor | agreement | pdf | assets.seatcount.example
"""

DOMAINS: tuple[Domain, ...] = tuple(
    Domain(*(cell.strip() for cell in line.split("|"))) for line in _TABLE.strip().splitlines()
)
