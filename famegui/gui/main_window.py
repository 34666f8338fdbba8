from PySide6.QtWidgets import QLabel, QMainWindow


class MainWindow(QMainWindow):
    def __init__(self, model=None, weights=None, images=()):
        super().__init__()
        self.setWindowTitle("famegui")
        self.setCentralWidget(QLabel("famegui"))
